"""Find and kill whole process trees (what a reward worker and everything it started form).

A reward worker is a child subreaper, so processes its rewards start stay its descendants even
after they double-fork and ``setsid``; walking ``/proc`` by parent pid finds them all.
"""

from __future__ import annotations

import os
import signal
import time


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` that has not exited (parents before children), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # an exited process waiting to be reaped is not running anything
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, frontier = [], [pid]
    while frontier:
        next_frontier = [child for parent in frontier for child in children.get(parent, [])]
        found += next_frontier
        frontier = next_frontier
    return found


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_process_tree(pid: int, attempts: int = 20) -> None:
    """SIGKILL ``pid``, every descendant and its process group. The process is stopped first
    so it starts nothing new, and descendants are killed until none is left (one may fork
    while the others die)."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    for _ in range(attempts):
        found = descendants(pid)
        if not found:
            break
        for child in found:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.001)
    kill_group(pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
