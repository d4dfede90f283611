"""Per-run control groups of the code sandbox: process and memory limits that bind root too.

``RLIMIT_NPROC`` is not applied by the kernel to processes whose host user is root, and
``RLIMIT_AS`` bounds each process, not a tree of them; a cgroup's ``pids.max`` and memory limit
bound the whole tree, whoever runs it (tmpfs pages written by the tree included). Each run gets
a child group of the caller's own group (so the caller's own limits still hold above it), named
``r1core-sandbox-<caller pid>-<n>``, in cgroup v2 (where the caller's group already enables the
``pids`` and ``memory`` controllers for its children) or in the v1 ``pids`` and ``memory``
hierarchies. Creating it needs write access to the caller's group: root, or a delegated
subtree (systemd ``Delegate=yes``).

Groups are removed after their run; groups of a caller that died mid-run (named by its pid)
are removed by ``remove_stale_groups``.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from dataclasses import dataclass

GROUP_PREFIX = "r1core-sandbox-"
_NAME_RE = re.compile(rf"^{GROUP_PREFIX}(\d+)-\d+$")
_counter = itertools.count()


@dataclass(frozen=True)
class CgroupSupport:
    """Where run groups are made: ``parents`` maps a controller ("pids", "memory") to the
    caller's own group directory in the hierarchy holding it (one directory in v2)."""

    version: int
    parents: dict[str, str]

    def describe(self) -> str:
        return f"cgroup v{self.version} ({', '.join(sorted(self.parents))})"


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, super options) of every mount, from mountinfo."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            separator = fields.index("-")
            mounts.append((fields[4], fields[separator + 1], set(fields[separator + 3].split(","))))
    return mounts


def _own_groups() -> dict[str, str]:
    """Controller list ("" for v2) -> this process's group path, from /proc/self/cgroup."""
    groups = {}
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            groups[controllers] = path
    return groups


def _writable_parent(directory: str) -> bool:
    probe = os.path.join(directory, f"{GROUP_PREFIX}{os.getpid()}-probe")
    try:
        os.mkdir(probe)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def find_support() -> CgroupSupport | str:
    """The cgroups this process can create run groups in, or a sentence saying why none."""
    try:
        mounts, groups = _mounts(), _own_groups()
    except (OSError, ValueError, IndexError) as error:
        return f"cannot read this process's cgroups ({error})"
    reasons = []
    v2_mount = next((point for point, kind, _ in mounts if kind == "cgroup2"), None)
    if v2_mount is not None and "" in groups:
        parent = os.path.normpath(v2_mount + groups[""])
        try:
            with open(os.path.join(parent, "cgroup.controllers"), encoding="utf-8") as handle:
                available = set(handle.read().split())
            with open(os.path.join(parent, "cgroup.subtree_control"), encoding="utf-8") as handle:
                enabled = set(handle.read().split())
        except OSError:
            available, enabled = set(), set()
        # Controllers are not enabled here: that would change the limits of every sibling group
        # (and is refused anyway in a non-root group holding processes).
        wanted = {"pids", "memory"}
        if wanted <= enabled and _writable_parent(parent):
            return CgroupSupport(2, {"pids": parent, "memory": parent})
        reasons.append(f"cgroup v2 group {parent} does not enable pids and memory for its children "
                       f"(controllers available: {sorted(available) or 'none'})")
    parents = {}
    for controller in ("pids", "memory"):
        point = next((p for p, kind, options in mounts if kind == "cgroup" and controller in options), None)
        path = next((path for names, path in groups.items() if controller in names.split(",")), None)
        if point is None or path is None:
            reasons.append(f"no cgroup v1 {controller} hierarchy")
            continue
        parent = os.path.normpath(point + path)
        if _writable_parent(parent):
            parents[controller] = parent
        else:
            reasons.append(f"cgroup v1 group {parent} is not writable")
    if set(parents) == {"pids", "memory"}:
        return CgroupSupport(1, parents)
    return "; ".join(reasons) or "no cgroup hierarchy found"


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(value)


def _pids_in(directory: str) -> list[int]:
    try:
        with open(os.path.join(directory, "cgroup.procs"), encoding="utf-8") as handle:
            return [int(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


class RunGroup:
    """The cgroup(s) of one sandbox run; ``procs_files`` are the files a launcher writes "0" to,
    to move itself in before it starts the sandbox."""

    def __init__(self, support: CgroupSupport, name: str) -> None:
        self.name = name
        self.version = support.version
        self.directories = sorted({os.path.join(parent, name) for parent in support.parents.values()})
        self._pids_dir = os.path.join(support.parents["pids"], name)
        self._memory_dir = os.path.join(support.parents["memory"], name)

    @classmethod
    def create(cls, support: CgroupSupport, max_processes: int, memory_bytes: int) -> RunGroup:
        """Make the group of a new run with these limits (OSError if the kernel refuses)."""
        group = cls(support, f"{GROUP_PREFIX}{os.getpid()}-{next(_counter)}")
        try:
            for directory in group.directories:
                os.mkdir(directory)
            _write(os.path.join(group._pids_dir, "pids.max"), str(max_processes))
            memory = group._memory_dir
            if support.version == 2:
                _write(os.path.join(memory, "memory.max"), str(memory_bytes))
                if os.path.exists(os.path.join(memory, "memory.swap.max")):
                    _write(os.path.join(memory, "memory.swap.max"), "0")
            else:
                _write(os.path.join(memory, "memory.limit_in_bytes"), str(memory_bytes))
                # memory + swap bounded by the same number: nothing can be swapped out of the limit.
                if os.path.exists(os.path.join(memory, "memory.memsw.limit_in_bytes")):
                    _write(os.path.join(memory, "memory.memsw.limit_in_bytes"), str(memory_bytes))
        except OSError:
            group.remove()
            raise
        return group

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(directory, "cgroup.procs") for directory in self.directories]

    def memory_limit_hit(self) -> bool:
        """Whether the kernel had to refuse or reclaim memory at the group's limit (OOM)."""
        try:
            if self.version == 2:
                with open(os.path.join(self._memory_dir, "memory.events"), encoding="utf-8") as handle:
                    events = dict(line.split() for line in handle if line.strip())
                return int(events.get("oom_kill", 0)) > 0 or int(events.get("max", 0)) > 0
            with open(os.path.join(self._memory_dir, "memory.failcnt"), encoding="utf-8") as handle:
                return int(handle.read()) > 0
        except (OSError, ValueError):
            return False

    def kill(self) -> None:
        """SIGKILL every process of the group."""
        kill_file = os.path.join(self.directories[0], "cgroup.kill")
        if self.version == 2 and os.path.exists(kill_file):
            try:
                _write(kill_file, "1")
            except OSError:
                pass
        for directory in self.directories:
            for pid in _pids_in(directory):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def remove(self, timeout_s: float = 5.0) -> bool:
        """Kill what is left, wait for it to exit, remove the group; False if it could not be
        removed within ``timeout_s`` (a process stuck in the kernel)."""
        deadline = time.monotonic() + timeout_s
        remaining = [d for d in self.directories if os.path.isdir(d)]
        while remaining:
            self.kill()
            still = []
            for directory in remaining:
                try:
                    os.rmdir(directory)
                except FileNotFoundError:
                    pass
                except OSError:  # EBUSY: processes still exiting
                    still.append(directory)
            remaining = still
            if remaining:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.005)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_groups(support: CgroupSupport, owner_pid: int | None = None) -> int:
    """Remove the run groups of ``owner_pid`` (default: of every dead owner); their count."""
    removed = 0
    for parent in set(support.parents.values()):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            match = _NAME_RE.match(name)
            if match is None:
                continue
            pid = int(match.group(1))
            if (owner_pid is not None and pid != owner_pid) or (owner_pid is None and _alive(pid)):
                continue
            removed += RunGroup(support, name).remove()
    return removed
