"""Sandboxed program runs and the code_execution reward, with real subprocesses (bubblewrap;
the attack catalogue is in sandbox_attacks.py / test_sandbox_attacks.py)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import pytest

from r1core.rewards import (
    CodeExecutionConfig,
    SandboxConfig,
    code_execution,
    get_reward,
    make_code_gold,
    run_program,
    scoring_in_process,
)
from r1core.rewards.code import extract_program, outputs_match, parse_code_gold
from r1core.rewards.sandbox import SandboxError, isolation_plan

pytestmark = pytest.mark.usefixtures("sandbox")
QUICK = SandboxConfig(wall_timeout_s=3.0, cpu_time_s=2, memory_limit_mb=256, max_output_bytes=4096)


def test_runs_program_with_stdin_in_clean_environment():
    result = run_program("import os, sys\nprint(input()[::-1]); print(sorted(os.environ)); print(os.getcwd(), os.getuid())\n"
                         "print(__name__, __file__, sys.argv)", "abc\n", QUICK)
    assert result.failure == "" and result.returncode == 0 and result.isolation == "namespaces"
    lines = result.stdout.splitlines()
    assert lines[0] == "cba"
    assert set(eval(lines[1])) <= {"PATH", "HOME", "PWD", "LANG", "TMPDIR", "PYTHONIOENCODING", "LC_CTYPE"}
    assert lines[2] == "/sandbox 65534"
    assert lines[3] == "__main__ program.py ['program.py']"


def test_nothing_is_left_on_the_host():
    before = set(os.listdir(tempfile.gettempdir()))
    result = run_program("open('/sandbox/out.txt', 'w').write('x'); open('/tmp/x', 'w').write('y')", "", QUICK)
    assert result.failure == ""
    assert {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("r1core-sandbox-")} == set()
    support = isolation_plan(QUICK).cgroup
    for parent in support.parents.values() if support else ():
        assert not [n for n in os.listdir(parent) if n.startswith(f"r1core-sandbox-{os.getpid()}-")]


@pytest.mark.parametrize(
    ("source", "failure"),
    [
        ("import time\ntime.sleep(60)", "wall timeout"),
        ("x = bytearray(1 << 30)", "memory limit"),
        ("while True:\n    print('y' * 1000)", "output size limit"),
        ("raise SystemExit(4)", "exit code 4: "),
        ("import ctypes\nctypes.string_at(0)", "segmentation fault"),
    ],
)
def test_limits(source, failure):
    result = run_program(source, "", QUICK)
    assert result.failure == failure
    assert len(result.stdout) <= QUICK.max_output_bytes
    assert result.wall_time_s < QUICK.wall_timeout_s + 2


def test_cpu_limit():
    config = SandboxConfig(wall_timeout_s=20.0, cpu_time_s=1)
    result = run_program("while True:\n    pass", "", config)
    assert result.failure == "CPU time limit"


def _marked(marker: str) -> list[int]:
    """Host pids of live processes with ``marker`` as an argument (sandboxed ones included)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read().split(b"\0") and _running(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _gone(marker: str, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s  # SIGKILL is delivered asynchronously
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _marked(marker)


def _sleeper(marker: str) -> str:
    return f"[sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}]"


def test_background_children_are_killed():
    marker = f"r1core-code-test-{os.getpid()}-background"
    source = (f"import subprocess, sys, os, time\np = subprocess.Popen({_sleeper(marker)})\n"
              f"if os.fork() == 0:\n    os.setsid()\n    subprocess.Popen({_sleeper(marker)})\n    os._exit(0)\n"
              "time.sleep(0.5)\nprint('started')")
    result = run_program(source, "", QUICK)
    assert result.failure == "" and result.stdout == "started\n"
    assert _gone(marker)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_no_network():
    source = ("import socket\n"
              "try:\n"
              "    socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
              "    print('connected')\n"
              "except OSError as error:\n"
              "    print('blocked', error.errno)\n"
              "print(socket.if_nameindex())")
    result = run_program(source, "", QUICK)
    assert result.stdout.startswith("blocked")
    assert "eth" not in result.stdout.splitlines()[1]  # only the loopback interface exists


def test_code_gold_round_trip_and_errors():
    gold = make_code_gold(stdio=[("1 2\n", "3\n")], asserts=["assert f(1) == 2"])
    assert json.loads(gold) == {"stdio": [{"input": "1 2\n", "output": "3\n"}], "asserts": ["assert f(1) == 2"]}
    assert parse_code_gold(gold) == ([("1 2\n", "3\n")], ["assert f(1) == 2"])
    with pytest.raises(ValueError, match="not JSON"):
        parse_code_gold("print(1)")
    with pytest.raises(ValueError, match="keys"):
        parse_code_gold('{"tests": []}')
    with pytest.raises(ValueError, match="at least one"):
        make_code_gold()


def test_extract_program_and_output_matching():
    response = "<think>```python\nprint(0)\n```</think>\nFirst:\n```\nprint(1)\n```\nBetter:\n```python\nprint(2)\n```"
    assert extract_program(response) == "print(2)\n"
    assert extract_program("<answer>print(3)</answer>") == "print(3)"
    assert extract_program("no code") is None
    assert outputs_match("3  \n\n", "3\n", "lines") and not outputs_match("3  \n", "3\n", "exact")
    assert outputs_match("1\n2 3", "1 2\n3\n", "tokens") and not outputs_match("1\n2 3", "1 2\n3\n", "lines")


ADD_STDIO = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
ADD_FUNCTION = "```python\ndef add(a, b):\n    return a + b\n```"


def test_code_execution_scores():
    stdio_gold = make_code_gold(stdio=[("1 2\n", "3\n"), ("10 -4\n", "6\n"), ("0 0\n", "1\n")])
    assert code_execution([ADD_STDIO], [stdio_gold]) == [pytest.approx(2 / 3)]
    assert_gold = make_code_gold(asserts=["assert add(2, 2) == 4", "assert add(-1, 1) == 0"])
    assert code_execution([ADD_FUNCTION, "no program", "```python\nimport time\ntime.sleep(60)\n```"],
                          [assert_gold] * 3,
                          CodeExecutionConfig(sandbox=QUICK)) == [1.0, 0.0, 0.0]
    strict = get_reward("code_execution", all_or_nothing=True, sandbox=QUICK)
    assert strict([ADD_STDIO], [stdio_gold]) == [0.0]


def test_code_execution_through_the_pool():
    from r1core.rewards import RewardPool, RewardPoolConfig

    gold = make_code_gold(stdio=[("2 3\n", "5\n")])
    reward = get_reward("code_execution", sandbox=QUICK)
    config = RewardPoolConfig(num_workers=2, sample_timeout_s=30.0, preload=())
    with RewardPool(config) as pool:
        result = pool.score(reward, [ADD_STDIO, "```python\nprint(6)\n```", "no program"], [gold] * 3)
    assert result.scores == [1.0, 0.0, 0.0] and result.num_failed == 0


def test_program_dies_with_a_killed_worker():
    # The pool kills a worker whose sample overruns; the sandboxed program it was running, and
    # its children, must not outlive it, and the run's cgroups must be removed.
    from r1core.rewards import RewardPool, RewardPoolConfig

    marker = f"r1core-code-test-{os.getpid()}-killed-worker"
    program = f"```python\nimport subprocess, sys, time\nsubprocess.Popen({_sleeper(marker)})\ntime.sleep(60)\n```"
    slow_sandbox = SandboxConfig(wall_timeout_s=60.0, cpu_time_s=5)
    reward = get_reward("code_execution", sandbox=slow_sandbox)
    config = RewardPoolConfig(num_workers=1, sample_timeout_s=4.0, preload=())
    with RewardPool(config) as pool:
        pool.score(get_reward("r1_format"), ["x"], [""])  # worker up
        (worker_pid,) = pool.worker_pids()
        result = pool.score(reward, [program], [make_code_gold(stdio=[("", "")])])
    assert result.scores == [0.0] and result.reasons == ["timeout after 4 s"]
    assert _gone(marker)
    support = isolation_plan(slow_sandbox).cgroup
    for parent in support.parents.values() if support else ():
        assert not [n for n in os.listdir(parent) if n.startswith(f"r1core-sandbox-{worker_pid}-")]


def test_syntax_error_and_surrogates_fail_cleanly():
    assert run_program("def f(:\n", "", QUICK).failure.startswith("exit code 1: SyntaxError")
    assert run_program("print('\udcff')", "", QUICK).failure.startswith("exit code 1:")


def test_refuses_without_bubblewrap(monkeypatch, tmp_path):
    # No bwrap on the PATH: a clear refusal naming the fix, never a silent unisolated run.
    monkeypatch.setenv("PATH", str(tmp_path))
    config = SandboxConfig(wall_timeout_s=2.0, python_executable="/usr/bin/python3")
    with pytest.raises(SandboxError, match="apt-get install bubblewrap"):
        run_program("print(1)", "", config)
    reward = get_reward("code_execution", sandbox=config)
    with scoring_in_process(), pytest.raises(SandboxError, match="bubblewrap"):  # the reward raises it too
        reward([ADD_STDIO], [make_code_gold(stdio=[("1 2\n", "3\n")])])


def test_unisolated_only_when_asked(tmp_path):
    config = SandboxConfig(isolation="none", wall_timeout_s=3.0)
    result = run_program("import os\nprint(os.getcwd())", "", config)
    assert result.failure == "" and result.isolation == "none"
    workdir = result.stdout.strip()
    assert os.path.basename(workdir).startswith(f"r1core-sandbox-{os.getpid()}-") and not os.path.exists(workdir)
    assert isolation_plan(config).describe()["isolation"].startswith("none")


def test_stale_folders_of_dead_owners_are_removed():
    from r1core.rewards.sandbox import remove_stale_sandbox_dirs

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tempfile.mkdtemp(prefix=f"r1core-sandbox-{dead.pid}-")
    mine = tempfile.mkdtemp(prefix=f"r1core-sandbox-{os.getpid()}-")
    try:
        remove_stale_sandbox_dirs()
        assert not os.path.exists(stale) and os.path.exists(mine)
    finally:
        os.rmdir(mine)


def test_code_execution_config_from_a_run_config_dict():
    reward = get_reward("code_execution", sandbox={"wall_timeout_s": 3.0, "memory_limit_mb": 256})
    assert reward.config.sandbox == SandboxConfig(wall_timeout_s=3.0, memory_limit_mb=256)
    with pytest.raises(TypeError, match="unexpected keyword"):
        get_reward("code_execution", sandbox={"wall_timeout": 3.0})
    with pytest.raises(ValueError, match="isolation"):
        SandboxConfig(isolation="chroot")


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/usr/bin/python3", os.X_OK),
                    reason="needs root and a system interpreter user nobody can run")
def test_root_caller_runs_the_sandbox_as_nobody_when_it_can():
    # With an interpreter outside any private folder, bubblewrap itself runs as nobody: the
    # program's host user is not root, so RLIMIT_NPROC binds even without a cgroup.
    config = SandboxConfig(python_executable="/usr/bin/python3", cgroups="off", wall_timeout_s=10.0)
    plan = isolation_plan(config)
    assert plan.runner is not None and plan.describe()["host user"].startswith("nobody")
    marker = f"r1core-code-test-{os.getpid()}-host-user"
    source = (f"import subprocess, sys, time\nsubprocess.Popen({_sleeper(marker)})\ntime.sleep(1.5)\n"
              "import os\ncount = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
              "    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n    count += 1\nprint(count)")
    result_holder = {}
    import threading

    thread = threading.Thread(target=lambda: result_holder.update(result=run_program(source, "", config)))
    thread.start()
    deadline = time.monotonic() + 10
    while not _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    (pid,) = _marked(marker)
    with open(f"/proc/{pid}/status") as handle:
        uids = next(line for line in handle if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {str(plan.runner[0])}
    thread.join(timeout=30)
    result = result_holder["result"]
    assert result.failure == "" and int(result.stdout) < config.max_processes
    assert _gone(marker)


def test_seccomp_filter_is_in_force():
    # Seccomp mode 2 (filter) inside the sandbox, and keyctl refused by the filter, while the
    # same call succeeds in a sandbox run without it (the kernel alone allows it).
    source = ("import ctypes, os\nstatus = open('/proc/self/status').read()\n"
              "print([l.split()[1] for l in status.splitlines() if l.startswith('Seccomp:')][0])\n"
              "libc = ctypes.CDLL(None, use_errno=True)\n"
              "print(libc.syscall(250, 1, None), ctypes.get_errno())")  # keyctl(KEYCTL_JOIN_SESSION_KEYRING)
    if os.uname().machine != "x86_64":
        pytest.skip("system call numbers are x86-64's")
    plan = isolation_plan(QUICK)
    if plan.seccomp is None:
        pytest.fail(f"no seccomp filter here: {plan.describe()['seccomp']}")
    with_filter = run_program(source, "", QUICK).stdout.split()
    without = run_program(source, "", SandboxConfig(wall_timeout_s=3.0, seccomp="off")).stdout.split()
    assert with_filter == ["2", "-1", "1"]  # EPERM
    assert without[0] == "0" and int(without[1]) >= 0
