"""The seccomp filter of the code sandbox: a deny list compiled to BPF with libseccomp.

The sandbox's namespaces already hide the host; this filter shrinks the kernel surface a
program can reach through them. It refuses (EPERM) the system calls a test program never
needs and that container escapes have used: debugging other processes (``ptrace``,
``process_vm_*``, ``pidfd_getfd``, ``kcmp``), mounting and namespace changes (``mount``,
``pivot_root``, ``unshare``, ``setns``, ``clone`` with any ``CLONE_NEW*`` flag), kernel keys,
``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring``, module and kexec loading, clock
and swap changes, file handles (``open_by_handle_at``). ``clone3`` answers ENOSYS: its flags
live in memory a filter cannot read, and the C library falls back to ``clone``, whose flags it
can. System calls of another ABI (32-bit ``int 0x80`` on x86-64) kill the process: libseccomp
adds only the native architecture, and its default for a foreign one is to kill.

The filter is compiled by libseccomp's official Python binding. Debian ships it as
``python3-seccomp`` for the system interpreter; a trainer usually runs in a virtual
environment without it, so the binding is used in-process when importable and otherwise
through ``/usr/bin/python3`` running this file (which needs nothing but the standard library
and that binding). The result is a BPF program in the kernel's ``struct sock_filter`` layout,
which ``bwrap --seccomp FD`` installs after it sets ``no_new_privs``.

    python3 -m r1core.rewards.seccomp_filter --bpf > filter.bpf     (what the sandbox loads)
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from typing import Any

DENIED_SYSCALLS = (
    # Reading or changing other processes.
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    # Mounts and namespaces (bwrap finished setting them up before the filter is loaded).
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    # Kernel interfaces with a history of privilege escalations.
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # Host administration.
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "syslog", "acct", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "quotactl", "quotactl_fd", "lookup_dcookie", "fanotify_init", "vhangup",
    "iopl", "ioperm", "uselib", "personality",
    # File handles bypass path permissions.
    "open_by_handle_at", "name_to_handle_at",
    # Memory placement of other processes.
    "move_pages", "migrate_pages",
)
"""System calls refused with EPERM (names unknown to the running kernel are skipped)."""

CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWTIME": 0x00000080, "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000, "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000, "CLONE_NEWNET": 0x40000000,
}
"""``clone`` flags that create namespaces; a ``clone`` with any of them is refused."""

SYSTEM_PYTHON = "/usr/bin/python3"


class SeccompUnavailable(RuntimeError):
    """No libseccomp Python binding can be loaded (the message says how to install one)."""


def build_filter(seccomp: Any) -> bytes:
    """Compile the deny list with the libseccomp binding module ``seccomp``; BPF bytes."""
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (ValueError, RuntimeError, OSError):  # not a system call of this architecture
            continue
    for flag in CLONE_NAMESPACE_FLAGS.values():
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as handle:
        rules.export_bpf(handle)
        handle.seek(0)
        return handle.read()


def compile_filter(system_python: str = SYSTEM_PYTHON) -> bytes:
    """The filter as BPF bytes, compiled in this interpreter if it has the binding, else by
    ``system_python``. Raises ``SeccompUnavailable`` naming the package to install."""
    try:
        import seccomp  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        return build_filter(seccomp)
    if not os.access(system_python, os.X_OK):
        raise SeccompUnavailable(
            f"no libseccomp Python binding: not importable here and {system_python} is missing "
            "(Debian/Ubuntu: apt-get install python3-seccomp)")
    completed = subprocess.run([system_python, "-I", os.path.abspath(__file__), "--bpf"],
                               capture_output=True, timeout=60, check=False)
    if completed.returncode != 0 or not completed.stdout:
        reason = completed.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise SeccompUnavailable(
            f"no libseccomp Python binding for {system_python} ({reason[0]}); "
            "Debian/Ubuntu: apt-get install python3-seccomp")
    return completed.stdout


def _main() -> None:
    if sys.argv[1:] != ["--bpf"]:
        sys.exit(f"usage: {sys.argv[0]} --bpf  (writes the sandbox's BPF filter to stdout)")
    try:
        import seccomp  # type: ignore[import-not-found]
    except ImportError as error:
        sys.exit(f"libseccomp binding not importable: {error}")
    sys.stdout.buffer.write(build_filter(seccomp))


if __name__ == "__main__":
    _main()
