"""Run an untrusted Python program isolated from the machine, with limits on everything it uses.

A program of a code reward is written by the policy being trained: it must not be able to read
the machine's secrets, touch the run's files, signal the trainer, reach the network, or use
more than its share of processes, memory, disk and time. ``isolation="namespaces"`` (the
default) runs it under bubblewrap (``bwrap``, Debian package ``bubblewrap``) with:

- new user, PID, mount, network, IPC, UTS and cgroup namespaces: the program sees only its own
  processes (a fresh ``/proc``), no network interface but its own loopback, no host IPC, and
  cannot create further user namespaces;
- a file system made of read-only views of ``/usr`` and the interpreter's own prefix (plus
  ``extra_sys_path``), a fresh ``/dev`` and ``/proc``, and private size-limited tmpfs on
  ``/tmp``, ``/dev/shm`` and the working directory ``/sandbox``; the root is read-only and
  ``/etc``, ``/home``, ``/root``, ``/run``, ``/sys``, ``/var`` and the run's folders do not exist;
- no capabilities, ``no_new_privs``, a new session (no terminal to inject into), and the
  seccomp deny list of ``r1core.rewards.seccomp_filter`` when a libseccomp binding exists;
- limits: ``RLIMIT_AS``/``CPU``/``FSIZE``/``NOFILE``/``CORE`` per process, and a limit on the
  number of processes and on the memory of the whole tree that holds for root too: a cgroup
  (``r1core.rewards.cgroups``) where this process may create one, else ``RLIMIT_NPROC`` counted
  in the sandbox's own user namespace, which binds only when the host user is not root. A root
  caller therefore runs bwrap as ``drop_root_to`` (``nobody``) when that user can run the
  interpreter, and otherwise needs the cgroup;
- an end: when the program exits or overruns ``wall_timeout_s``, the namespace's first process
  dies and the kernel kills every process left in the namespace (double forks and ``setsid``
  included); bwrap also dies with its caller (``--die-with-parent``).

When any of this cannot be set up, ``run_program`` raises ``SandboxError`` with the cause and
the fix. ``isolation="none"`` (explicit only) runs the program as a plain child with the
per-process limits, a new session killed at the end, and a temporary folder removed afterwards.

The program runs as ``python -I`` from a bootstrap that sets the limits and executes the source
as ``__main__`` (file name ``program.py``); stdin, stdout and stderr are anonymous memory files,
so nothing is written under the host's ``/tmp``. ``run_program`` starts no thread and sets no
``preexec_fn``: it may be called from threaded code. Check what is in force on a machine with

    python -m r1core.rewards sandbox-status [--python /usr/bin/python3]
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Literal

from r1core.rewards import cgroups
from r1core.rewards.seccomp_filter import SeccompUnavailable, compile_filter

logger = logging.getLogger(__name__)

SANDBOX_UID = 65534
"""User and group id of the program inside its user namespace (``nobody``'s numbers)."""
PROGRAM_PATH = "/r1core/program.py"
WORK_DIR = "/sandbox"
_TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_FIX = ("Fix: install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; `make venv` does it "
        "when run as root), allow user namespaces (sysctl user.max_user_namespaces > 0; on "
        "Ubuntu 24.04 also kernel.apparmor_restrict_unprivileged_userns=0), or, only if the "
        "programs are trusted, set isolation='none' in the sandbox config.")

# Runs inside the sandbox (python -I -c): limits first, then the program as __main__.
# argv: program path, memory bytes, CPU s, file bytes, processes, open files, parent pid (0 = none).
_BOOTSTRAP = """
import resource, sys
def _r1core_start():
    path = sys.argv[1]
    memory, cpu, file_size, processes, open_files, parent = map(int, sys.argv[2:8])
    if parent:
        import ctypes, os
        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != parent:
            os._exit(137)
    for kind, soft, hard in ((resource.RLIMIT_AS, memory, memory), (resource.RLIMIT_CPU, cpu, cpu + 1),
                             (resource.RLIMIT_FSIZE, file_size, file_size),
                             (resource.RLIMIT_NPROC, processes, processes),
                             (resource.RLIMIT_NOFILE, open_files, open_files), (resource.RLIMIT_CORE, 0, 0)):
        resource.setrlimit(kind, (soft, hard))
    with open(path, 'rb') as handle:
        code = compile(handle.read(), 'program.py', 'exec')
    sys.argv = ['program.py']
    namespace = globals()
    for name in [n for n in namespace if n not in ('__name__', '__builtins__', '__doc__', '__spec__',
                                                   '__loader__', '__package__', '__annotations__')]:
        del namespace[name]
    namespace['__file__'] = 'program.py'
    exec(code, namespace)
_r1core_start()
"""


class SandboxError(RuntimeError):
    """The sandbox cannot provide the isolation its config asks for (the message says why and
    how to fix it)."""


@dataclass(frozen=True)
class SandboxConfig:
    """Isolation and limits of sandboxed runs.

    Fields:
        wall_timeout_s: wall-clock limit of one run; past it every process of the run is killed.
        cpu_time_s: ``RLIMIT_CPU`` of each process (SIGXCPU).
        memory_limit_mb: ``RLIMIT_AS`` of each process, and the memory limit of the whole run's
            cgroup (tmpfs contents included) where cgroups are used.
        max_processes: processes and threads of one run (cgroup ``pids.max``, and
            ``RLIMIT_NPROC`` counted in the run's own user namespace).
        max_output_bytes: ``RLIMIT_FSIZE``: caps stdout, stderr and any file the program writes.
        max_open_files: ``RLIMIT_NOFILE``.
        scratch_mb: size of each private tmpfs (``/tmp``, ``/dev/shm``, the working directory).
        isolation: "namespaces" (bubblewrap; refuses to run without it) or "none" (no
            isolation from the machine: only for trusted programs, and only when asked).
        cgroups: "auto" (use when this process may create cgroups), "required" or "off". A root
            caller whose interpreter ``drop_root_to`` cannot run needs them: without them no
            process limit holds for root, and the sandbox refuses to run.
        seccomp: "auto" (load the filter when a libseccomp binding exists), "required" or "off".
        drop_root_to: host user that runs the sandbox when the caller is root, if it can run the
            interpreter (None: stay root; then cgroups are required).
        python_executable: interpreter of the programs ("": the real path of the one running
            r1core). Its prefix is visible read-only inside the sandbox.
        extra_sys_path: host directories made visible read-only at the same path and put first
            on the program's ``sys.path`` (e.g. a site-packages holding numpy).
    """

    wall_timeout_s: float = 5.0
    cpu_time_s: int = 5
    memory_limit_mb: int = 512
    max_processes: int = 64
    max_output_bytes: int = 1 << 20
    max_open_files: int = 256
    scratch_mb: int = 64
    isolation: Literal["namespaces", "none"] = "namespaces"
    cgroups: Literal["auto", "required", "off"] = "auto"
    seccomp: Literal["auto", "required", "off"] = "auto"
    drop_root_to: str | None = "nobody"
    python_executable: str = ""
    extra_sys_path: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        choices = {"isolation": ("namespaces", "none"), "cgroups": ("auto", "required", "off"),
                   "seccomp": ("auto", "required", "off")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"SandboxConfig.{name} must be one of {valid}, got {getattr(self, name)!r}")
        if self.wall_timeout_s <= 0 or self.cpu_time_s < 1 or self.memory_limit_mb < 16 \
                or self.max_processes < 4 or self.max_output_bytes < 1 or self.scratch_mb < 1:
            raise ValueError(f"SandboxConfig limits out of range: {self}")
        # Lists from a YAML/JSON run config.
        object.__setattr__(self, "extra_sys_path", tuple(self.extra_sys_path))


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run: exit status (negative or 128+N = signal N), captured output
    (capped), why it failed ("" if it exited 0), wall time, and the isolation it ran under."""

    returncode: int
    stdout: str
    stderr: str
    failure: str
    wall_time_s: float
    isolation: str


@dataclass(frozen=True)
class IsolationPlan:
    """What runs under one config get on this machine (probed once per process and config)."""

    mode: str
    python: str
    read_only_paths: tuple[str, ...] = ()
    bwrap: str = ""
    runner: tuple[int, int] | None = None  # (uid, gid) bwrap is started as, None: the caller
    cgroup: cgroups.CgroupSupport | None = None
    seccomp: bytes | None = None
    notes: tuple[tuple[str, str], ...] = ()  # (feature, state) for ``describe``

    def describe(self) -> dict[str, str]:
        """Feature -> what is in force (or why not), for logs and the status command."""
        return dict(self.notes)


# ----------------------------------------------------------------------------- planning

_plans: dict[tuple, IsolationPlan] = {}
_plan_lock = threading.Lock()


def _plan_key(config: SandboxConfig) -> tuple:
    return (config.isolation, config.cgroups, config.seccomp, config.drop_root_to,
            config.python_executable, config.extra_sys_path)


def isolation_plan(config: SandboxConfig = SandboxConfig()) -> IsolationPlan:
    """The isolation runs under ``config`` get here; raises ``SandboxError`` (cause and fix)
    when it cannot be established. Probed on first use, with one trial run, then cached."""
    key = _plan_key(config)
    with _plan_lock:
        plan = _plans.get(key)
        if plan is None:
            plan = _make_plan(config)
            _plans[key] = plan
            logger.info("code sandbox: %s", json.dumps(plan.describe()))
    return plan


def _interpreter_paths(python: str) -> tuple[str, ...]:
    """Prefixes the interpreter needs (the binary's folder, stdlib, shared library)."""
    command = [python, "-I", "-c",
               "import sys, json; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]))"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                               cwd="/", env={"PATH": "/usr/bin:/bin"})
    if completed.returncode != 0:
        raise OSError(completed.stderr.strip().splitlines()[-1:] or [f"exit code {completed.returncode}"])
    paths = {os.path.realpath(path) for path in json.loads(completed.stdout)}
    paths.add(os.path.dirname(python))
    return tuple(sorted(paths))


def _drop_to(ids: tuple[int, int]) -> list[str]:
    return ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", "--"]


def _make_plan(config: SandboxConfig) -> IsolationPlan:
    python = os.path.realpath(config.python_executable or sys.executable)
    if not os.access(python, os.X_OK):
        raise SandboxError(f"sandbox interpreter {python} is not executable")
    if config.isolation == "none":
        remove_stale_sandbox_dirs()
        return IsolationPlan("none", python, notes=(("isolation", "none (asked by the config): programs "
                                                     "run as plain child processes of the caller"),))
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError(f"the code sandbox needs bubblewrap (`bwrap`), which is not installed. {_FIX}")
    notes: list[tuple[str, str]] = [("namespaces", "user, pid, mount, network, ipc, uts, cgroup (bubblewrap)")]
    for path in config.extra_sys_path:
        if not os.path.isdir(path):
            raise SandboxError(f"extra_sys_path entry {path!r} is not a directory")

    try:
        read_only = _interpreter_paths(python)
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise SandboxError(f"cannot run the sandbox interpreter {python}: {error}") from error
    read_only = tuple(sorted(set(read_only) | set(config.extra_sys_path)))

    runner = None
    is_root = os.geteuid() == 0
    if is_root and config.drop_root_to:
        try:
            entry = pwd.getpwnam(config.drop_root_to)
        except KeyError:
            raise SandboxError(f"drop_root_to: no user {config.drop_root_to!r} on this machine") from None
        ids = (entry.pw_uid, entry.pw_gid)
        # bwrap started as that user must be able to open every path it binds.
        check = 'for p; do test -r "$p" -a -x "$p" || { echo "$p"; exit 1; }; done'
        try:
            completed = subprocess.run(_drop_to(ids) + ["/bin/sh", "-c", check, "sh", python, *read_only],
                                       capture_output=True, text=True, timeout=60, check=False)
            unreadable = completed.stdout.strip() or python if completed.returncode else ""
        except (OSError, subprocess.SubprocessError) as error:  # no setpriv (util-linux)
            unreadable = f"{python} (setpriv failed: {error})"
        if not unreadable:
            runner = ids
            notes.append(("host user", f"{config.drop_root_to} (uid {ids[0]}): the caller is root, "
                                       "bubblewrap runs unprivileged"))
        else:
            notes.append(("host user", f"root: user {config.drop_root_to!r} cannot read {unreadable}; "
                                       "the program has no capabilities, but root-owned files it can "
                                       "see are its own"))
    elif is_root:
        notes.append(("host user", "root (drop_root_to is None); the program has no capabilities"))
    else:
        notes.append(("host user", f"uid {os.geteuid()} (the caller)"))

    cgroup = None
    root_in_sandbox = is_root and runner is None
    if config.cgroups != "off":
        support = _cgroup_support()
        if isinstance(support, cgroups.CgroupSupport):
            cgroup = support
            cgroups.remove_stale_groups(support)
            notes.append(("cgroups", f"{support.describe()}: pids.max and a memory limit per run"))
        elif config.cgroups == "required" or root_in_sandbox:
            why = ("cgroups are required by the config" if config.cgroups == "required" else
                   "no process limit holds for a root-owned sandbox without a cgroup "
                   "(the kernel exempts root from RLIMIT_NPROC)")
            raise SandboxError(f"{why}, and none can be created: {support}. Fix: run as root with "
                               "a writable cgroup hierarchy, or run the trainer as a non-root user, "
                               f"or let user {config.drop_root_to or 'nobody'!r} run the interpreter "
                               "(set python_executable to one outside a private home directory).")
        else:
            notes.append(("cgroups", f"not used ({support})"))
    elif root_in_sandbox:
        raise SandboxError("cgroups='off' leaves a root-owned sandbox without a process limit (the "
                           "kernel exempts root from RLIMIT_NPROC); allow cgroups or drop_root_to a user "
                           "that can run the interpreter")
    else:
        notes.append(("cgroups", "off (config)"))
    notes.append(("process limit", "cgroup pids.max" + ("" if root_in_sandbox else
                                                         " and RLIMIT_NPROC in the run's user namespace")
                  if cgroup else "RLIMIT_NPROC in the run's user namespace"))
    notes.append(("memory limit", "RLIMIT_AS per process" + (" and the run's cgroup memory limit" if cgroup else "")))

    seccomp = None
    if config.seccomp != "off":
        try:
            seccomp = _seccomp_filter()
            notes.append(("seccomp", "deny list loaded by bwrap (r1core.rewards.seccomp_filter)"))
        except SeccompUnavailable as error:
            if config.seccomp == "required":
                raise SandboxError(f"seccomp is required by the config: {error}") from error
            logger.warning("code sandbox runs without its seccomp filter: %s", error)
            notes.append(("seccomp", f"not used: {error}"))
    else:
        notes.append(("seccomp", "off (config)"))
    notes.append(("privileges", "no capabilities, no_new_privs, new session"))
    plan = IsolationPlan("namespaces", python, read_only, bwrap, runner, cgroup, seccomp, tuple(notes))

    trial = _run_isolated(plan, "import os\nprint('ok', os.getuid())", "",
                          SandboxConfig(wall_timeout_s=60.0, cpu_time_s=30))
    if trial.stdout.split() != ["ok", str(SANDBOX_UID)]:
        message = (trial.stderr.strip() or trial.failure)[-500:]
        raise SandboxError(f"the code sandbox does not start on this machine: {message}. {_FIX}")
    return plan


_support_cache: list = []
_filter_cache: list = []


def _cgroup_support() -> cgroups.CgroupSupport | str:
    if not _support_cache:
        _support_cache.append(cgroups.find_support())
    return _support_cache[0]


def _seccomp_filter() -> bytes:
    if not _filter_cache:
        _filter_cache.append(compile_filter())
    return _filter_cache[0]


# ----------------------------------------------------------------------------- running

def _memory_file(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(f"r1core-{name}", os.MFD_CLOEXEC)
    if data:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_capped(fd: int, limit: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(1 << 16, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _bootstrap_args(config: SandboxConfig, program_path: str, parent_pid: int) -> list[str]:
    limits = [config.memory_limit_mb << 20, config.cpu_time_s, config.max_output_bytes,
              config.max_processes, config.max_open_files, parent_pid]
    return ["-I", "-c", _BOOTSTRAP, program_path, *map(str, limits)]


def _bwrap_arguments(plan: IsolationPlan, config: SandboxConfig) -> list[str]:
    scratch = str(config.scratch_mb << 20)
    arguments = [
        "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
        "--unshare-cgroup", "--disable-userns", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORK_DIR,
        "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONIOENCODING", "utf-8",
        "--ro-bind", "/usr", "/usr",
    ]
    for name in _TOP_LEVEL_LINKS:
        host = "/" + name
        if os.path.islink(host):
            arguments += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            arguments += ["--ro-bind", host, host]
    for path in plan.read_only_paths:
        if path != "/usr" and not path.startswith("/usr/"):
            arguments += ["--ro-bind", path, path]
    arguments += ["--proc", "/proc", "--dev", "/dev"]
    for path in ("/tmp", "/dev/shm", WORK_DIR):
        arguments += ["--size", scratch, "--perms", "1777", "--tmpfs", path]
    arguments += ["--chdir", WORK_DIR]
    return arguments


def _describe_failure(returncode: int, timed_out: bool, stderr: str, memory_hit: bool, isolated: bool) -> str:
    if timed_out:
        return "wall timeout"
    if returncode == 0:
        return ""
    signal_number = -returncode if returncode < 0 else returncode - 128 if isolated and returncode > 128 else 0
    if memory_hit and signal_number == signal.SIGKILL:
        return "memory limit"
    if signal_number:
        names = {signal.SIGXCPU: "CPU time limit", signal.SIGXFSZ: "output size limit",
                 signal.SIGKILL: "killed", signal.SIGSEGV: "segmentation fault"}
        return names.get(signal_number, f"signal {signal_number}")
    lines = stderr.strip().splitlines()
    last_line = lines[-1] if lines else ""
    if isolated and last_line.startswith("bwrap:"):
        return f"sandbox setup failed: {last_line[:200]}"
    if "MemoryError" in last_line or memory_hit:
        return "memory limit"
    if "File too large" in last_line:  # Python ignores SIGXFSZ, so a write fails with EFBIG
        return "output size limit"
    return f"exit code {returncode}: {last_line[:200]}"


def _namespace_init_pid(info_fd: int) -> int | None:
    """The host pid of the namespace's first process, from bwrap's --info-fd (non-blocking)."""
    data = b""
    os.set_blocking(info_fd, False)
    try:
        while True:
            chunk = os.read(info_fd, 4096)
            if not chunk:
                break
            data += chunk
    except BlockingIOError:
        pass
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError):
        marker = data.find(b'"child-pid":')
        digits = data[marker + 12:].strip().split(b",")[0].split(b"\n")[0].strip() if marker >= 0 else b""
        return int(digits) if digits.isdigit() else None


def _run_isolated(plan: IsolationPlan, source: str, stdin: str, config: SandboxConfig) -> SandboxResult:
    files = {"program": _memory_file("program", source.encode("utf-8", "surrogatepass")),
             "stdin": _memory_file("stdin", stdin.encode("utf-8", "surrogatepass")),
             "stdout": _memory_file("stdout"), "stderr": _memory_file("stderr")}
    if plan.seccomp is not None:
        files["seccomp"] = _memory_file("seccomp", plan.seccomp)
    info_read, info_write = os.pipe()
    group = None
    try:
        command = [plan.bwrap, *_bwrap_arguments(plan, config), "--info-fd", str(info_write),
                   "--ro-bind-data", str(files["program"]), PROGRAM_PATH, "--remount-ro", "/"]
        if "seccomp" in files:
            command += ["--seccomp", str(files["seccomp"])]
        command += ["--", plan.python, *_bootstrap_args(config, PROGRAM_PATH, 0)]
        if plan.runner is not None:
            command = _drop_to(plan.runner) + command
        if plan.cgroup is not None:
            # Room for the launcher, bwrap and the namespace's first process beside the program's own.
            try:
                group = cgroups.RunGroup.create(plan.cgroup, config.max_processes + 3, config.memory_limit_mb << 20)
            except OSError as error:
                raise SandboxError(f"cannot create the run's cgroup: {error}") from error
            # The launcher moves itself into the group, then becomes bwrap: every process of the
            # run starts inside it.
            join = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo 0 > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
            command = ["/bin/sh", "-c", join, "r1core-sandbox", str(len(group.procs_files)), *group.procs_files, *command]
        started = time.monotonic()
        process = subprocess.Popen(
            command, stdin=files["stdin"], stdout=files["stdout"], stderr=files["stderr"],
            pass_fds=[fd for name, fd in files.items() if name in ("program", "seccomp")] + [info_write],
            env={"PATH": "/usr/bin:/bin"}, cwd="/", start_new_session=True,
        )
        os.close(info_write)
        info_write = -1
        timed_out = not _wait_without_reaping(process.pid, config.wall_timeout_s)
        if timed_out:
            # Killing the namespace's first process makes the kernel kill every process of the
            # namespace; bwrap then reports and exits, so the wait below returns only once all
            # of them are gone.
            init_pid = _namespace_init_pid(info_read)
            if init_pid is not None:
                try:
                    os.kill(init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()
        wall_time = time.monotonic() - started
        memory_hit = group.memory_limit_hit() if group is not None else False
        stdout = _read_capped(files["stdout"], config.max_output_bytes)
        stderr = _read_capped(files["stderr"], config.max_output_bytes)
        failure = _describe_failure(process.returncode, timed_out, stderr, memory_hit, isolated=True)
        return SandboxResult(process.returncode, stdout, stderr, failure, wall_time, "namespaces")
    finally:
        if group is not None and not group.remove():
            logger.warning("sandbox cgroup %s could not be removed", group.directories)
        for fd in [*files.values(), info_read, info_write]:
            if fd >= 0:
                os.close(fd)


# ----------------------------------------------------------------------------- no isolation

def sandbox_dir_prefix(owner_pid: int) -> str:
    """Name prefix of the temporary folders of unisolated runs made by process ``owner_pid``."""
    return f"r1core-sandbox-{owner_pid}-"


def remove_sandbox_dirs(owner_pid: int) -> None:
    """Remove every temporary folder left by the (dead) process ``owner_pid``."""
    prefix = sandbox_dir_prefix(owner_pid)
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def remove_stale_sandbox_dirs() -> int:
    """Remove the temporary folders whose owner process is dead; their count."""
    root, removed = tempfile.gettempdir(), 0
    for name in os.listdir(root):
        parts = name.split("-")
        if name.startswith("r1core-sandbox-") and len(parts) >= 4 and parts[2].isdigit():
            owner = int(parts[2])
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                removed += 1
            except PermissionError:
                pass
    return removed


def remove_sandbox_leftovers(owner_pid: int) -> None:
    """Remove what the killed process ``owner_pid`` left mid-run: its run cgroups (killing
    any process still in them) and its temporary folders."""
    support = _cgroup_support()
    if isinstance(support, cgroups.CgroupSupport):
        cgroups.remove_stale_groups(support, owner_pid)
    remove_sandbox_dirs(owner_pid)


def _run_unisolated(plan: IsolationPlan, source: str, stdin: str, config: SandboxConfig) -> SandboxResult:
    workdir = tempfile.mkdtemp(prefix=sandbox_dir_prefix(os.getpid()))
    files = {"stdin": _memory_file("stdin", stdin.encode("utf-8", "surrogatepass")),
             "stdout": _memory_file("stdout"), "stderr": _memory_file("stderr")}
    try:
        program_path = os.path.join(workdir, "program.py")
        with open(program_path, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(source)
        environment = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
        started = time.monotonic()
        process = subprocess.Popen(
            [plan.python, *_bootstrap_args(config, program_path, os.getpid())], stdin=files["stdin"],
            stdout=files["stdout"], stderr=files["stderr"], cwd=workdir, env=environment, start_new_session=True,
        )
        timed_out = not _wait_without_reaping(process.pid, config.wall_timeout_s)
        # Kill the whole session while the program is an unreaped zombie: its pid, hence the
        # group id, cannot have been reused yet. Children that left the session survive this:
        # that is what isolation="namespaces" is for.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        wall_time = time.monotonic() - started
        stdout = _read_capped(files["stdout"], config.max_output_bytes)
        stderr = _read_capped(files["stderr"], config.max_output_bytes)
        failure = _describe_failure(process.returncode, timed_out, stderr, False, isolated=False)
        return SandboxResult(process.returncode, stdout, stderr, failure, wall_time, "none")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for fd in files.values():
            os.close(fd)


def _wait_without_reaping(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` exits, leaving it a zombie; False if ``timeout_s`` passed first.

    A pidfd wakes up the moment the process exits (``Popen.wait(timeout)`` polls with sleeps
    of up to 50 ms, which would dominate the cost of a short run)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # kernel before 5.3: poll
        pidfd = -1
    if pidfd >= 0:
        try:
            readable, _, _ = select.select([pidfd], [], [], max(0.0, timeout_s))
            return bool(readable)
        finally:
            os.close(pidfd)
    deadline = time.monotonic() + timeout_s
    pause = 0.001
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.02)


# ----------------------------------------------------------------------------- public

def run_program(source: str, stdin: str = "", config: SandboxConfig = SandboxConfig()) -> SandboxResult:
    """Run Python ``source`` with ``stdin`` under the isolation and limits of ``config``.

    Raises ``SandboxError`` when the isolation the config asks for cannot be set up here.
    """
    plan = isolation_plan(config)
    if plan.mode == "none":
        return _run_unisolated(plan, source, stdin, config)
    return _run_isolated(plan, source, stdin, config)
