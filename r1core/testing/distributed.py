"""Run a function on several processes (a gloo group on the CPU) and, when one fails, report
what that process itself said.

``torch.multiprocessing.spawn`` reports a crashed worker as "process 1 terminated with
signal SIGABRT" and loses everything the worker printed from native code (glibc's heap
checks, C++ ``terminate`` messages, OpenMP runtime errors). :func:`run_workers` instead
sends each worker's file descriptors 1 and 2 to a log of its own, arms ``faulthandler``
there (a Python stack of every thread on SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL) and, if any
worker fails, raises :class:`WorkerFailure` with each rank's exit status (signals by name),
its Python traceback and the tail of its log.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch.distributed as dist
import torch.multiprocessing as mp

LOG_TAIL_CHARS = 6000


class WorkerFailure(AssertionError):
    """A worker process raised, crashed or timed out; the message holds its own report."""


def _entry(fn: Callable[..., Any], rank: int, world_size: int, workdir: str, args: tuple, backend: str) -> None:
    log = open(os.path.join(workdir, f"rank{rank}.log"), "w", buffering=1)
    # Native code writes to the file descriptors, not to sys.stderr: redirect those.
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    faulthandler.enable(file=log, all_threads=True)
    code = 0
    try:
        dist.init_process_group(
            backend, init_method=f"file://{os.path.join(workdir, 'rendezvous')}", rank=rank, world_size=world_size
        )
        # init_process_group can return on one rank while a peer is still connecting its
        # side of the mesh; a rank that then leaves (fn finished or raised) breaks the peer's
        # connection. Every rank starts fn with the group complete.
        dist.barrier()
        try:
            fn(rank, world_size, *args)
        except BaseException:
            # When this rank failed, before its peers can notice it leaving.
            Path(workdir, f"rank{rank}.failed_at").write_text(repr(time.time()))
            raise
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 (everything is reported to the parent)
        traceback.print_exc(file=log)
        code = 1
    log.flush()
    # A normal exit: a crash while the interpreter tears down is a failure of the worker too,
    # and faulthandler (which keeps `log` open) reports it.
    if code:
        sys.exit(code)


def _describe(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running at the deadline (killed)"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


def run_workers(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout: float = 600.0,
    backend: str = "gloo",
) -> None:
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` spawned processes that share an
    initialised ``backend`` process group (the default group); raise :class:`WorkerFailure`
    naming every failed rank with its traceback and log if any raises, crashes or is still
    running after ``timeout`` seconds. ``fn`` and ``args`` must be picklable (``fn`` defined at
    a module's top level). Spawned workers inherit the environment."""
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="r1core-workers-") as workdir:
        processes = [
            context.Process(target=_entry, args=(fn, rank, world_size, workdir, args, backend), daemon=False)
            for rank in range(world_size)
        ]
        for process in processes:
            process.start()
        deadline = time.monotonic() + timeout
        # Wait for all; once one fails the others would block in a collective: give them a
        # few seconds to report, then stop them.
        failed_at = None
        ended_at: dict[int, float] = {}  # rank -> when its exit was seen, to name the first failure
        while True:
            now = time.monotonic()
            for rank, process in enumerate(processes):
                if rank not in ended_at and process.exitcode is not None:
                    ended_at[rank] = time.time()
            if failed_at is None and any(p.exitcode not in (None, 0) for p in processes):
                failed_at = now
            if len(ended_at) == world_size or now > deadline or (failed_at is not None and now - failed_at > 10):
                break
            time.sleep(0.02)
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(5)
        statuses = [(rank, p.exitcode if p.exitcode is not None else None) for rank, p in enumerate(processes)]
        timed_out = time.monotonic() > deadline and failed_at is None
        if not timed_out and all(code == 0 for _, code in statuses):
            return
        reports = []
        # The rank that failed first is reported first: the others usually fail because it did
        # (a peer that left makes their collectives fail), which mp.spawn cannot tell apart.
        # A rank killed by a signal comes first; then each rank by the time it caught its
        # exception (recorded before it left the group), else by when its exit was seen.
        def first_failure(item: tuple[int, int | None]) -> tuple[int, float]:
            rank, code = item
            marker = Path(workdir, f"rank{rank}.failed_at")
            when = float(marker.read_text()) if marker.exists() else ended_at.get(rank, float("inf"))
            return (0 if code is not None and code < 0 and code != -signal.SIGKILL else 1, when)

        statuses.sort(key=first_failure)
        first = True
        for rank, code in statuses:
            log = Path(workdir, f"rank{rank}.log")
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            if code == 0 and not timed_out:
                continue
            status = _describe(code) if not (timed_out and code == -signal.SIGKILL) else "timed out (killed)"
            tail = text[-LOG_TAIL_CHARS:] if text.strip() else "(the worker printed nothing)"
            reports.append(f"--- rank {rank}: {status}{' (the first to fail)' if first else ''}; its output:\n{tail}")
            first = False
        raise WorkerFailure(f"{len(reports)} of {world_size} workers failed\n" + "\n".join(reports))
