"""Run an untrusted Python program in a subprocess with resource limits.

Each run gets: a fresh temporary working directory (removed afterwards); a clean environment
(``PATH``, ``HOME`` = the directory, ``LANG``); ``python -I`` (no user site, no ``PYTHON*``
variables, no current directory on ``sys.path``); a new session, whose whole process group is
SIGKILLed at the end (no stray children); and these limits, set in the child before ``exec``:

- ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (CPU seconds; SIGXCPU), wall-clock timeout;
- ``RLIMIT_FSIZE`` = the output cap: stdout and stderr go to files in the directory, so a
  program that prints without end is stopped by SIGXFSZ instead of filling memory or disk;
- ``RLIMIT_NPROC`` (fork bombs). The kernel does not apply it to root, so when running as root
  the child also drops to the ``nobody`` user (``run_as_nobody``), which additionally keeps it
  from writing anywhere but its own directory;
- no network: a new, empty network namespace (``unshare(CLONE_NEWNET)``, needs root or
  user namespaces). ``network_isolation="best_effort"`` runs without it, with one warning,
  where the kernel refuses; ``"required"`` raises ``SandboxError`` instead.
- ``PR_SET_PDEATHSIG``: the program is killed if the worker running it is killed.

The limits are set with ``preexec_fn``, which is only safe in a single-threaded process: call
``run_program`` from ``RewardPool`` workers (single-threaded), not from a threaded trainer.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_network_probe: bool | None = None


class SandboxError(RuntimeError):
    """The sandbox cannot provide a protection its config requires."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one sandboxed run.

    Fields:
        wall_timeout_s: wall-clock limit; the process group is killed past it.
        cpu_time_s: RLIMIT_CPU in seconds.
        memory_limit_mb: RLIMIT_AS in MiB.
        max_processes: RLIMIT_NPROC. The kernel counts every process and thread of the user
            the program runs as (not just the sandbox's), so this bounds a fork bomb rather
            than the program's own children; keep it above the user's usual count.
        max_output_bytes: RLIMIT_FSIZE, caps stdout and stderr (and any file written).
        network_isolation: "required", "best_effort" or "off" (see the module docstring).
        run_as_nobody: when started as root, drop to the ``nobody`` user in the child.
        python_executable: interpreter that runs the program.
    """

    wall_timeout_s: float = 5.0
    cpu_time_s: int = 5
    memory_limit_mb: int = 512
    max_processes: int = 256
    max_output_bytes: int = 1 << 20
    network_isolation: Literal["required", "best_effort", "off"] = "best_effort"
    run_as_nobody: bool = True
    python_executable: str = sys.executable


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run: exit status (negative = signal), captured output (capped), why it
    failed ("" if it exited 0), wall time, and whether the network was isolated."""

    returncode: int
    stdout: str
    stderr: str
    failure: str
    wall_time_s: float
    network_isolated: bool


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def _unshare_network() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")


def network_isolation_available() -> bool:
    """Whether this process may create network namespaces (probed once, in a child)."""
    global _network_probe
    if _network_probe is None:
        try:
            subprocess.run(["true"], preexec_fn=_unshare_network, check=True, timeout=10)
            _network_probe = True
        except (subprocess.SubprocessError, OSError):
            _network_probe = False
    return _network_probe


_nobody_probe: dict[str, tuple[int, int] | None] = {}


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def nobody_ids(python_executable: str) -> tuple[int, int] | None:
    """(uid, gid) of ``nobody`` if, as root, a child can drop to it and still start
    ``python_executable`` (an interpreter under /root, mode 0700, cannot); else None.
    Probed once per interpreter, with a warning when unavailable."""
    if os.geteuid() != 0:
        return None
    if python_executable not in _nobody_probe:
        ids = None
        try:
            entry = pwd.getpwnam("nobody")
            candidate = (entry.pw_uid, entry.pw_gid)
            subprocess.run([python_executable, "-I", "-c", "pass"], check=True, timeout=30,
                           preexec_fn=lambda: _drop_privileges(*candidate),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
            ids = candidate
        except (KeyError, subprocess.SubprocessError, OSError):
            logger.warning(
                "sandbox runs programs as root: user 'nobody' cannot run %s, so RLIMIT_NPROC "
                "is not enforced (the kernel exempts root) and files outside the sandbox "
                "directory are writable", python_executable)
        _nobody_probe[python_executable] = ids
    return _nobody_probe[python_executable]


def sandbox_dir_prefix(owner_pid: int) -> str:
    """Name prefix of the temporary directories made by process ``owner_pid``; ``RewardPool``
    removes them after killing a worker mid-run (its own clean-up never ran)."""
    return f"r1core-sandbox-{owner_pid}-"


def remove_sandbox_dirs(owner_pid: int) -> None:
    """Remove every temporary directory left by the (dead) process ``owner_pid``."""
    prefix = sandbox_dir_prefix(owner_pid)
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _make_preexec(config: SandboxConfig, isolate_network: bool, drop_to: tuple[int, int] | None):
    memory = config.memory_limit_mb * 1024 * 1024

    def preexec() -> None:  # runs in the child between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if isolate_network:
            _unshare_network()
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (config.cpu_time_s, config.cpu_time_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (config.max_output_bytes, config.max_output_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (config.max_processes, config.max_processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if drop_to is not None:
            _drop_privileges(*drop_to)

    return preexec


def _read_capped(path: str, limit: int) -> str:
    with open(path, "rb") as handle:
        return handle.read(limit).decode("utf-8", "replace")


def _describe_failure(returncode: int, timed_out: bool, stderr: str) -> str:
    if timed_out:
        return "wall timeout"
    if returncode == 0:
        return ""
    if returncode < 0:
        name = {signal.SIGXCPU: "CPU time limit", signal.SIGXFSZ: "output size limit",
                signal.SIGKILL: "killed", signal.SIGSEGV: "segmentation fault"}
        return name.get(-returncode, f"signal {-returncode}")
    last_line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if "MemoryError" in last_line:
        return "memory limit"
    if "File too large" in last_line:  # Python ignores SIGXFSZ, so a write fails with EFBIG
        return "output size limit"
    return f"exit code {returncode}: {last_line[:200]}"


def _wait_without_reaping(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` exits, leaving it a zombie; False if ``timeout_s`` passed first."""
    deadline = time.monotonic() + timeout_s
    pause = 0.001
    while True:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.02)


def run_program(source: str, stdin: str = "", config: SandboxConfig = SandboxConfig()) -> SandboxResult:
    """Run Python ``source`` with ``stdin`` under the limits of ``config``."""
    isolate = config.network_isolation != "off" and network_isolation_available()
    if config.network_isolation == "required" and not isolate:
        raise SandboxError("network isolation is required but unshare(CLONE_NEWNET) is not permitted")
    if config.network_isolation == "best_effort" and not isolate:
        _warn_once("sandbox runs WITHOUT network isolation (unshare(CLONE_NEWNET) not permitted)")
    drop_to = nobody_ids(config.python_executable) if config.run_as_nobody else None
    workdir = tempfile.mkdtemp(prefix=sandbox_dir_prefix(os.getpid()))
    try:
        program_path = os.path.join(workdir, "program.py")
        with open(program_path, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(source)
        stdin_path = os.path.join(workdir, "stdin.txt")
        with open(stdin_path, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(stdin)
        if drop_to is not None:
            for path in (workdir, program_path):
                os.chown(path, *drop_to)
        stdout_path, stderr_path = os.path.join(workdir, "stdout"), os.path.join(workdir, "stderr")
        environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8",
                       "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
        started = time.monotonic()
        with open(os.path.join(workdir, "stdin.txt"), "rb") as stdin_file, \
                open(stdout_path, "wb") as stdout_file, open(stderr_path, "wb") as stderr_file:
            process = subprocess.Popen(
                [config.python_executable, "-I", program_path], stdin=stdin_file,
                stdout=stdout_file, stderr=stderr_file, cwd=workdir, env=environment,
                preexec_fn=_make_preexec(config, isolate, drop_to), start_new_session=True,
            )
            timed_out = not _wait_without_reaping(process.pid, config.wall_timeout_s)
            # Kill the whole session (the program and anything it started) while the exited
            # program is still an unreaped zombie: its pid, hence the group id, cannot have
            # been reused by an unrelated process yet.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        wall_time = time.monotonic() - started
        stdout = _read_capped(stdout_path, config.max_output_bytes)
        stderr = _read_capped(stderr_path, config.max_output_bytes)
        failure = _describe_failure(process.returncode, timed_out, stderr)
        return SandboxResult(process.returncode, stdout, stderr, failure, wall_time, isolate)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
