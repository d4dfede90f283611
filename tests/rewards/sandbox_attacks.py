"""What a hostile program might try from inside the code sandbox, each with its required outcome.

Every attack is a Python program, as a policy could write it, run through
``r1core.rewards.sandbox.run_program``. A program reports ``ESCAPED <what>`` for anything
forbidden that worked and ``BLOCKED <what>: <error>`` otherwise, but the verdict comes from the
host: each attack has a ``check`` that looks at the machine after the run (is the checkpoint
folder still there, is the caller alive, did the test's listener get a connection, ...), and
every attack is also checked for leftovers: no process left in the run's PID namespace, no
``r1core-sandbox-*`` folder or cgroup left behind, the caller and a sentinel process alive.

    python tests/rewards/sandbox_attacks.py [--markdown]       (all attacks, one row each)

``tests/rewards/test_sandbox_attacks.py`` runs the list as the caller (root in CI) and, from root,
as the unprivileged user ``nobody``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from r1core.rewards.sandbox import SandboxConfig, SandboxResult, isolation_plan, run_program  # noqa: E402

# Printed first by every attack: the PID namespace of the run, to find survivors from the host.
PRELUDE = "import os, sys\nprint('R1CORE-NS', os.readlink('/proc/self/ns/pid'), file=sys.stderr, flush=True)\n"
TRY = '''
def attempt(what, action):
    try:
        value = action()
    except BaseException as error:
        print("BLOCKED", what + ":", type(error).__name__, error, flush=True)
        return None
    print("ESCAPED", what, repr(value)[:200], flush=True)
    return value
'''


@dataclass
class Context:
    """Host-side bait and probes of one attack run."""

    token: str
    caller_pid: int
    caller_parent_pid: int
    secret: str
    secret_path: str
    checkpoint_dir: str
    port: int
    abstract_name: str
    sentinel_pid: int
    hostname: str
    stdlib_os: str
    stdlib_os_stat: tuple[int, float]
    visible_paths: tuple[str, ...]
    listeners: list[socket.socket] = field(default_factory=list)

    def fill(self, source: str) -> str:
        return source.format(**{k: v for k, v in vars(self).items() if not isinstance(v, list)})


Check = Callable[[SandboxResult, Context], "str | None"]


@dataclass(frozen=True)
class Attack:
    """One attempt: ``source`` (a template over ``Context`` fields), the outcome it must have
    (``expected``, for the table) and the host-side ``check`` (None when that outcome held,
    else what went wrong). ``config`` overrides sandbox limits for this attack."""

    name: str
    goal: str
    source: str
    expected: str
    check: Check
    config: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- checks

def no_escape(result: SandboxResult, context: Context) -> str | None:
    escaped = [line for line in result.stdout.splitlines() if line.startswith("ESCAPED")]
    return f"program reports {escaped}" if escaped else None


def all_of(*checks: Check) -> Check:
    def check(result: SandboxResult, context: Context) -> str | None:
        for item in checks:
            problem = item(result, context)
            if problem:
                return problem
        return None
    return check


def secret_not_seen(result: SandboxResult, context: Context) -> str | None:
    if context.secret in result.stdout or context.secret in result.stderr:
        return "the secret reached the program's output"
    return None


def checkpoint_intact(result: SandboxResult, context: Context) -> str | None:
    marker = Path(context.checkpoint_dir, "model.safetensors")
    if not marker.is_file() or marker.read_text() != "weights":
        return "the checkpoint folder was changed"
    return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def processes_alive(result: SandboxResult, context: Context) -> str | None:
    dead = [name for name, pid in (("caller", context.caller_pid), ("caller's parent", context.caller_parent_pid),
                                   ("sentinel", context.sentinel_pid)) if not _alive(pid)]
    return f"killed: {dead}" if dead else None


def no_connection(result: SandboxResult, context: Context) -> str | None:
    for listener in context.listeners:
        listener.setblocking(False)
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            continue
        connection.close()
        return f"the host listener {listener.getsockname()!r} was reached"
    return None


def host_tmp_untouched(result: SandboxResult, context: Context) -> str | None:
    for directory in ("/tmp", "/dev/shm", "/var/tmp"):
        if os.path.exists(os.path.join(directory, f"r1core-attack-{context.token}")):
            return f"a file appeared in the host's {directory}"
    return None


def stdlib_untouched(result: SandboxResult, context: Context) -> str | None:
    stat = os.stat(context.stdlib_os)
    return None if (stat.st_size, stat.st_mtime) == context.stdlib_os_stat else "the interpreter's stdlib changed"


def hostname_unchanged(result: SandboxResult, context: Context) -> str | None:
    return None if socket.gethostname() == context.hostname else "the host name changed"


def count_at_most(limit_field: str, extra: int = 0) -> Check:
    def check(result: SandboxResult, context: Context) -> str | None:
        counts = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("COUNT")]
        if not counts:
            return f"no COUNT line (failure: {result.failure!r}, stderr: {result.stderr[-300:]!r})"
        limit = getattr(SandboxConfig(), limit_field) if limit_field else 0
        return None if counts[-1] <= limit + extra else f"reached {counts[-1]} (limit {limit})"
    return check


def failure_is(*failures: str) -> Check:
    def check(result: SandboxResult, context: Context) -> str | None:
        return None if result.failure in failures else f"failure {result.failure!r}, expected one of {failures}"
    return check


def output_mentions(*needles: str) -> Check:
    """The program reached the point of the attack (its BLOCKED line) rather than crashing."""
    def check(result: SandboxResult, context: Context) -> str | None:
        missing = [needle for needle in needles if needle not in result.stdout]
        return f"output lacks {missing}: {result.stdout[-300:]!r} {result.stderr[-300:]!r}" if missing else None
    return check


def only_read_only_views(result: SandboxResult, context: Context) -> str | None:
    """Every folder listed holds only the sandbox's own mounts and the way to the read-only ones."""
    own = {"/": {"usr", "proc", "dev", "tmp", "sandbox", "r1core", *(name for name in
                                                                   ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
                                                                   if os.path.lexists("/" + name))}}
    for path in context.visible_paths:
        parts = Path(path).parts
        for depth in range(1, len(parts)):
            own.setdefault(str(Path(*parts[:depth])), set()).add(parts[depth])
    for line in result.stdout.splitlines():
        if line.startswith("LIST "):
            _, path, listing = line.split(" ", 2)
            extra = set(json.loads(listing)) - own.get(path, set())
            if extra:
                return f"{path} shows {sorted(extra)}"
    return None


MEMORY_BOUND_MB = 512  # what the multi-process memory attack may hold in total


def memory_bounded(result: SandboxResult, context: Context) -> str | None:
    held = sum(int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("HELD"))
    return None if held <= MEMORY_BOUND_MB else f"the run held {held} MiB at once (bound {MEMORY_BOUND_MB} MiB)"


# ----------------------------------------------------------------------------- attacks

ATTACKS: list[Attack] = [
    Attack("read_shadow", "read /etc/shadow", TRY + "attempt('read /etc/shadow', lambda: open('/etc/shadow').read())",
           "no /etc in the sandbox", all_of(no_escape, output_mentions("BLOCKED read /etc/shadow"))),
    Attack("read_secret_file", "read a file of the run's user outside the sandbox",
           TRY + "attempt('read secret', lambda: open({secret_path!r}).read())",
           "the host's folders are not mounted", all_of(no_escape, secret_not_seen)),
    Attack("delete_checkpoint", "delete the run's checkpoint folder",
           TRY + "import shutil\nattempt('rmtree checkpoint', lambda: shutil.rmtree({checkpoint_dir!r}))\n"
                 "attempt('remove weights', lambda: os.remove({checkpoint_dir!r} + '/model.safetensors'))",
           "the folder is not visible; it is intact", all_of(no_escape, checkpoint_intact)),
    Attack("kill_caller_and_parent", "SIGKILL the caller, its parent and its process group",
           TRY + "import signal\nattempt('kill caller', lambda: os.kill({caller_pid}, signal.SIGKILL))\n"
                 "attempt('kill parent', lambda: os.kill({caller_parent_pid}, signal.SIGKILL))\n"
                 "attempt('kill caller group', lambda: os.killpg({caller_pid}, signal.SIGKILL))\n"
                 "attempt('kill sentinel', lambda: os.kill({sentinel_pid}, signal.SIGKILL))",
           "host processes are invisible (own PID namespace); all alive", all_of(no_escape, processes_alive)),
    Attack("kill_everything", "kill(-1, SIGKILL): every process it may signal",
           "import signal, time\nos.kill(-1, signal.SIGKILL)\ntime.sleep(0.5)",
           "only the sandbox's own processes die", processes_alive),
    Attack("read_caller_environ", "read the trainer's environment through /proc",
           TRY + "attempt('caller environ', lambda: open('/proc/{caller_pid}/environ', 'rb').read())\n"
                 "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
                 "    try:\n        print(open('/proc/' + pid + '/environ', 'rb').read())\n    except OSError:\n        pass\n"
                 "print(dict(os.environ))",
           "the caller is not in the sandbox's /proc; the environment is a clean one",
           all_of(no_escape, secret_not_seen)),
    Attack("write_caller_memory", "open the trainer's /proc/<pid>/mem for writing",
           TRY + "attempt('open caller mem', lambda: open('/proc/{caller_pid}/mem', 'r+b'))",
           "the caller is not in the sandbox's /proc", all_of(no_escape, processes_alive)),
    Attack("list_host_processes", "list the machine's processes",
           "pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]\nprint('COUNT', len(pids))",
           "only the sandbox's own (3 or fewer) are visible", count_at_most("", 3)),
    Attack("fork_bomb_500", "start 500 processes",
           "import time\ncount = 0\nfor _ in range(500):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
           "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    count += 1\nprint('COUNT', count)",
           "fork fails at max_processes; all are killed at the end", count_at_most("max_processes")),
    Attack("double_fork_setsid", "leave a daemon running after the run (double fork + setsid)",
           "import time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\n"
           "time.sleep(0.3)\nprint('parent exits')",
           "the daemon dies with the run's PID namespace", output_mentions("parent exits")),
    Attack("children_past_timeout", "outlive the wall timeout with busy children",
           "import time\nfor _ in range(4):\n    if os.fork() == 0:\n        os.setsid()\n        while True:\n            pass\ntime.sleep(60)",
           "wall timeout; every process killed", failure_is("wall timeout"), {"wall_timeout_s": 2.0}),
    Attack("write_host_tmp", "plant files in the host's /tmp, /dev/shm and /var/tmp",
           TRY + "for d in ('/tmp', '/dev/shm', '/var/tmp'):\n"
                 "    try:\n        open(d + '/r1core-attack-{token}', 'w').write('x')\n        print('wrote', d)\n"
                 "    except OSError as error:\n        print('BLOCKED', d, error)",
           "writes land in the run's private tmpfs, gone with it", host_tmp_untouched),
    Attack("fill_scratch", "fill the disk through /tmp",
           "total = 0\ntry:\n    for i in range(400):\n        with open('/tmp/f%d' % i, 'wb') as f:\n            f.write(b'x' * (1 << 20))\n"
           "        total += 1\nexcept OSError as error:\n    print('stopped', error)\nprint('COUNT', total)",
           "stops at scratch_mb (64 MiB of tmpfs)", count_at_most("scratch_mb")),
    Attack("network_internet", "reach the internet (TCP to 1.1.1.1:53, DNS)",
           TRY + "import socket\nattempt('tcp 1.1.1.1', lambda: socket.create_connection(('1.1.1.1', 53), timeout=2))\n"
                 "attempt('dns', lambda: socket.getaddrinfo('pypi.org', 443))\nprint('interfaces', socket.if_nameindex())",
           "no route: the network namespace has only its own loopback",
           all_of(no_escape, output_mentions("BLOCKED tcp 1.1.1.1", "interfaces [(1, 'lo')]"))),
    Attack("network_host_loopback", "connect to a server on the host's 127.0.0.1",
           TRY + "import socket\nattempt('tcp host loopback', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2))",
           "refused: the sandbox's loopback is its own", all_of(no_escape, no_connection)),
    Attack("abstract_unix_socket", "connect to a host abstract unix socket (as D-Bus and X11 use)",
           TRY + "import socket\ns = socket.socket(socket.AF_UNIX)\nattempt('abstract socket', lambda: s.connect('\\0{abstract_name}'))",
           "refused: abstract sockets belong to the network namespace", all_of(no_escape, no_connection)),
    Attack("write_interpreter", "modify the interpreter's standard library",
           TRY + "attempt('append to os.py', lambda: open(os.__file__, 'a').write('#'))\n"
                 "attempt('chmod python', lambda: os.chmod(sys.executable, 0o777))",
           "read-only mount", all_of(no_escape, stdlib_untouched)),
    Attack("read_host_files", "list /root, /home, /etc, /var, /run, /sys, /work (the repository)",
           "import json\nfor path in ('/', '/root', '/home', '/etc', '/var', '/run', '/sys', '/work', '/boot', '/mnt'):\n"
           "    try:\n        print('LIST', path, json.dumps(sorted(os.listdir(path))))\n    except OSError as error:\n"
           "        print('BLOCKED', path, error)",
           "absent, but for the folders leading to the read-only views", only_read_only_views),
    Attack("become_root", "setuid(0), and keep any capability",
           TRY + "attempt('setuid 0', lambda: os.setuid(0))\nstatus = open('/proc/self/status').read()\n"
                 "print([line for line in status.splitlines() if line.startswith(('CapEff', 'CapPrm', 'NoNewPrivs', 'Uid'))])\n"
                 "assert 'CapEff:\\t0000000000000000' in status and 'NoNewPrivs:\\t1' in status, status\nprint('no capabilities')",
           "EPERM; no capabilities, no_new_privs set", all_of(no_escape, output_mentions("no capabilities"))),
    Attack("new_namespaces", "unshare a user or mount namespace, mount /proc and a tmpfs",
           TRY + "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                 "def call(name, *args):\n    if getattr(libc, name)(*args) != 0:\n        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
                 "attempt('unshare user', lambda: call('unshare', 0x10000000))\n"
                 "attempt('unshare mount', lambda: call('unshare', 0x00020000))\n"
                 "attempt('mount tmpfs', lambda: call('mount', b'none', b'/sandbox', b'tmpfs', 0, None))",
           "EPERM (no capabilities, nested user namespaces disabled, seccomp)", no_escape),
    Attack("ptrace_and_peek", "ptrace the namespace's init; process_vm_readv",
           TRY + "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                 "def call(result):\n    if result != 0:\n        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
                 "attempt('ptrace attach 1', lambda: call(libc.ptrace(16, 1, None, None)))",
           "EPERM", no_escape),
    Attack("kernel_interfaces", "reach bpf, perf_event_open, userfaultfd, io_uring, keyctl",
           TRY + "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                 "def call(number, *args):\n    result = libc.syscall(number, *args)\n"
                 "    if result < 0:\n        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n    return result\n"
                 "buffer = ctypes.create_string_buffer(256)\n"
                 "attempt('bpf', lambda: call(321, 0, buffer, 128))\n"
                 "attempt('perf_event_open', lambda: call(298, buffer, 0, -1, -1, 0))\n"
                 "attempt('userfaultfd', lambda: call(323, 0))\n"
                 "attempt('io_uring_setup', lambda: call(425, 8, buffer))\n"
                 "attempt('keyctl join', lambda: call(250, 1, None))",
           "EPERM from the seccomp filter (or the kernel)", no_escape),
    Attack("memory_bomb", "allocate 8 GiB in one process", "x = bytearray(8 << 30)\nprint('ESCAPED allocated')",
           "memory limit", all_of(no_escape, failure_is("memory limit"))),
    Attack("memory_across_processes", "hold memory in many processes at once (each under RLIMIT_AS)",
           "import time\nfor _ in range(12):\n    if os.fork() == 0:\n        try:\n            block = bytearray(100 << 20)\n"
           "            for i in range(0, len(block), 4096):\n                block[i] = 1\n            print('HELD 100', flush=True)\n"
           "            time.sleep(5)\n        except MemoryError:\n            pass\n        os._exit(0)\ntime.sleep(3)",
           f"at most {MEMORY_BOUND_MB} MiB held at once (the run's cgroup, or max_processes x RLIMIT_AS)",
           memory_bounded, {"memory_limit_mb": 160, "max_processes": 5, "wall_timeout_s": 6.0}),
    Attack("output_flood", "print without end", "while True:\n    print('y' * 1000)",
           "output size limit", failure_is("output size limit")),
    Attack("cpu_spin", "spin on the CPU", "while True:\n    pass", "CPU time limit",
           failure_is("CPU time limit"), {"cpu_time_s": 1, "wall_timeout_s": 10.0}),
    Attack("open_files", "exhaust file descriptors",
           "files = []\ntry:\n    while True:\n        files.append(open('/dev/null'))\nexcept OSError:\n    pass\nprint('COUNT', len(files))",
           "stops at max_open_files", count_at_most("max_open_files")),
    Attack("change_hostname", "change the machine's host name",
           TRY + "import socket\nattempt('sethostname', lambda: socket.sethostname('pwned'))",
           "EPERM, and the UTS namespace is the sandbox's own", all_of(no_escape, hostname_unchanged)),
    Attack("inherited_descriptors", "use file descriptors inherited from the caller",
           "print('COUNT', len([fd for fd in os.listdir('/proc/self/fd') if int(fd) > 3]))",
           "only stdin, stdout, stderr", count_at_most("", 0)),
    Attack("proc_root_escape", "reach the host's root through /proc/<pid>/root and /proc/1/cwd",
           TRY + "attempt('caller root', lambda: os.listdir('/proc/{caller_pid}/root/'))\n"
                 "attempt('init shadow', lambda: open('/proc/1/root/etc/shadow').read())",
           "the sandbox's own root only", all_of(no_escape, secret_not_seen)),
    Attack("devices", "open block devices, /dev/mem, /dev/kmsg, the terminal",
           TRY + "for path in ('/dev/vda', '/dev/sda', '/dev/mem', '/dev/kmsg', '/dev/tty', '/dev/console'):\n"
                 "    attempt('open ' + path, lambda: open(path, 'rb'))",
           "a fresh /dev holds only null, zero, full, random, urandom, tty (no controlling terminal)", no_escape),
    Attack("cgroup_escape", "move out of the run's cgroup or raise its limits",
           TRY + "print(open('/proc/self/cgroup').read())\n"
                 "attempt('list /sys/fs/cgroup', lambda: os.listdir('/sys/fs/cgroup'))",
           "no /sys; the cgroup namespace hides the hierarchy", no_escape),
]


# ----------------------------------------------------------------------------- running

@dataclass
class Outcome:
    """Result of one attack: ``problem`` is None when the expected outcome held."""

    name: str
    goal: str
    expected: str
    problem: str | None
    failure: str
    wall_time_s: float


def _namespace_members(namespace: str) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace and _alive(int(entry)):
                    members.append(int(entry))
            except OSError:
                continue
    return members


def _leftovers(result: SandboxResult, tmp_before: set[str], config: SandboxConfig) -> str | None:
    namespaces = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("R1CORE-NS")]
    if namespaces:
        deadline = time.monotonic() + 3.0
        while (survivors := _namespace_members(namespaces[0])) and time.monotonic() < deadline:
            time.sleep(0.05)
        if survivors:
            return f"processes survived the run: {survivors}"
    created = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(f"r1core-sandbox-{os.getpid()}-")} - tmp_before
    if created:
        return f"folders left: {sorted(created)}"
    support = isolation_plan(config).cgroup
    for parent in support.parents.values() if support else ():
        left = [name for name in os.listdir(parent) if name.startswith(f"r1core-sandbox-{os.getpid()}-")]
        if left:
            return f"cgroups left in {parent}: {left}"
    return None


def _context(work: Path, config: SandboxConfig) -> Context:
    token = uuid.uuid4().hex
    secret = f"r1core-secret-{token}"
    secret_path = work / "secret.txt"
    secret_path.write_text(secret)
    secret_path.chmod(0o600)
    checkpoint = work / "checkpoints" / "step_00001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_text("weights")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    abstract = socket.socket(socket.AF_UNIX)
    abstract_name = f"r1core-attack-{token}"
    abstract.bind("\0" + abstract_name)
    abstract.listen(4)
    sentinel = subprocess.Popen(["sleep", "120"])
    stdlib_os = os.__file__
    stat = os.stat(stdlib_os)
    return Context(token, os.getpid(), os.getppid(), secret, str(secret_path), str(checkpoint),
                   listener.getsockname()[1], abstract_name, sentinel.pid, socket.gethostname(), stdlib_os,
                   (stat.st_size, stat.st_mtime), isolation_plan(config).read_only_paths, [listener, abstract])


def run_attack(attack: Attack, config: SandboxConfig = SandboxConfig()) -> Outcome:
    """Run ``attack`` in the sandbox and judge it from the host."""
    with tempfile.TemporaryDirectory(prefix="r1core-attack-bait-") as work:
        context = _context(Path(work), config)
        os.environ["R1CORE_ATTACK_SECRET"] = context.secret  # bait for /proc/<pid>/environ
        tmp_before = set(os.listdir(tempfile.gettempdir()))
        try:
            result = run_program(PRELUDE + context.fill(attack.source), "", replace(config, **attack.config))
            problem = attack.check(result, context) or _leftovers(result, tmp_before, config) or processes_alive(result, context)
        finally:
            os.environ.pop("R1CORE_ATTACK_SECRET", None)
            os.kill(context.sentinel_pid, signal.SIGKILL)
            os.waitpid(context.sentinel_pid, 0)
            for listener in context.listeners:
                listener.close()
    return Outcome(attack.name, attack.goal, attack.expected, problem, result.failure, result.wall_time_s)


def run_all(config: SandboxConfig = SandboxConfig()) -> list[Outcome]:
    return [run_attack(attack, config) for attack in ATTACKS]


def main() -> int:
    config = SandboxConfig()
    plan = isolation_plan(config)
    outcomes = run_all(config)
    if "--markdown" in sys.argv:
        user = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        print(f"Caller: {user}; isolation: {json.dumps(plan.describe())}\n")
        print("| attack | tries to | required outcome | held |")
        print("| --- | --- | --- | --- |")
        for outcome in outcomes:
            held = "yes" if outcome.problem is None else f"NO: {outcome.problem}"
            print(f"| {outcome.name} | {outcome.goal} | {outcome.expected} | {held} |")
    else:
        print(json.dumps([vars(outcome) for outcome in outcomes], indent=1))
    return 0 if all(outcome.problem is None for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
