"""Sandboxed program runs and the code_execution reward, with real subprocesses."""

from __future__ import annotations

import json
import os
import tempfile
import time

import pytest

from r1core.rewards import CodeExecutionConfig, SandboxConfig, code_execution, get_reward, make_code_gold, run_program
from r1core.rewards.code import extract_program, outputs_match, parse_code_gold
from r1core.rewards.sandbox import network_isolation_available

QUICK = SandboxConfig(wall_timeout_s=3.0, cpu_time_s=2, memory_limit_mb=256, max_output_bytes=4096)


def test_runs_program_with_stdin_in_clean_environment():
    result = run_program("import os, sys\nprint(input()[::-1]); print(sorted(os.environ)); print(os.getcwd())", "abc\n", QUICK)
    assert result.failure == "" and result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "cba"
    assert set(eval(lines[1])) <= {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "LC_CTYPE"}
    assert os.path.basename(lines[2]).startswith(f"r1core-sandbox-{os.getpid()}-")
    assert not os.path.exists(lines[2])  # the working directory is removed afterwards


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


def test_background_children_are_killed():
    source = ("import subprocess, sys\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print(p.pid)")
    result = run_program(source, "", QUICK)
    assert result.failure == ""
    child = int(result.stdout.strip())
    deadline = time.monotonic() + 5  # SIGKILL is delivered asynchronously
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not network_isolation_available(), reason="cannot create a network namespace here")
def test_no_network():
    source = ("import socket\n"
              "try:\n"
              "    socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
              "    print('connected')\n"
              "except OSError as error:\n"
              "    print('blocked', error.errno)\n"
              "print(socket.if_nameindex())")
    result = run_program(source, "", QUICK)
    assert result.network_isolated
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


def test_program_dies_with_a_killed_worker(tmp_path):
    # The pool kills a worker whose sample overruns; the sandboxed program it was running must
    # not outlive it (PR_SET_PDEATHSIG in the sandbox child).
    from r1core.rewards import RewardPool, RewardPoolConfig

    pid_file = tmp_path / "pid"
    os.chmod(tmp_path, 0o777)
    program = f"```python\nimport os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n```"
    slow_sandbox = SandboxConfig(wall_timeout_s=60.0, cpu_time_s=5)
    reward = get_reward("code_execution", sandbox=slow_sandbox)
    config = RewardPoolConfig(num_workers=1, sample_timeout_s=3.0, preload=())
    with RewardPool(config) as pool:
        pool.score(get_reward("r1_format"), ["x"], [""])  # worker up
        (worker_pid,) = pool.worker_pids()
        result = pool.score(reward, [program], [make_code_gold(stdio=[("", "")])])
    assert result.scores == [0.0] and result.reasons == ["timeout after 3 s"]
    program_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _running(program_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(program_pid)
    # The killed worker's sandbox directory is removed by the pool.
    leftovers = [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(f"r1core-sandbox-{worker_pid}-")]
    assert leftovers == []
