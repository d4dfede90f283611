"""Worker process of ``RewardPool``: scores samples one at a time and streams the results.

Started by the pool as ``python -m r1core.rewards.worker --fd N ...`` (a fresh interpreter,
not a multiprocessing child: nothing of the caller's process, its threads, torch state or
``__main__`` module is inherited or re-imported). Protocol on the socket ``fd``, pickled with
``multiprocessing.connection``:

    pool -> worker: ("task", task_id, rewards_blob, [(unit_id, reward_index, response, gold)])
                    ("stop",)
    worker -> pool: ("ready", pid)  after the preload hooks ran (startup time is never
                                     charged to a sample's timeout)
                    ("result", task_id, unit_id, score, reason, error)  once per unit, in
                                     order; ``error``: the pickled exception the reward raised
                                     (None if it returned)
                    ("task_error", task_id, message)  the reward table could not be loaded
                    ("fatal", message)  a preload hook failed; the worker exits

Results are sent per sample so the pool can time each sample on its own and, when a worker
hangs or dies, knows exactly which sample was running.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import math
import os
import pickle
import resource
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from r1core.rewards.process_tree import descendants
from r1core.rewards.registry import mark_reward_worker

_MAX_REASON_CHARS = 300
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this worker when the pool's thread goes away, and to hand it
    every orphan of its tree (child subreaper), so the pool can find and kill them.

    A worker stuck in C-level work cannot notice an EOF on its socket, so a plain "exit when
    the pipe closes" would leave it running forever if the caller is killed.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError):  # not Linux: rely on EOF only
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _kill_own_descendants() -> None:
    for child in descendants(os.getpid()):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap_orphans()


def _reap_orphans() -> None:
    """Collect exited processes re-parented to this worker (it is a child subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _limit_memory(memory_limit_mb: int | None) -> None:
    if memory_limit_mb:
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _short(text: str) -> str:
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."


def score_unit(reward: Any, response: str, gold: str) -> tuple[float, str | None, bytes | None]:
    """Run a batch reward on one sample; (score, None, None) or (0.0, reason, pickled
    exception or None) — never raises."""
    try:
        values = reward([response], [gold])
        if len(values) != 1:
            return 0.0, f"reward returned {len(values)} values for 1 sample", None
        value = float(values[0])
    except MemoryError:
        return 0.0, "MemoryError (worker memory limit)", None
    except RecursionError:
        return 0.0, "RecursionError (input nested too deeply)", None
    except Exception as error:  # any failure of a reward scores 0 with its reason
        reason = _short(f"{type(error).__name__}: {error}")
        try:
            blob = pickle.dumps(error)
        except Exception:  # an exception holding unpicklable state: its text stands in
            blob = pickle.dumps(RuntimeError(reason))
        return 0.0, reason, blob
    if not math.isfinite(value):
        return 0.0, f"non-finite reward {value!r}", None
    return value, None, None


def _run_preload(preload: list[str]) -> None:
    for hook in preload:
        module_name, _, function_name = hook.partition(":")
        module = importlib.import_module(module_name)
        if function_name:
            getattr(module, function_name)()


def serve(connection: Connection) -> None:
    """Receive tasks until "stop" or EOF; score each unit and send its result."""
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            _kill_own_descendants()
            return
        if message[0] == "stop":
            _kill_own_descendants()
            return
        _, task_id, rewards_blob, units = message
        try:
            rewards = pickle.loads(rewards_blob)
        except Exception as error:
            connection.send(("task_error", task_id, _short(f"{type(error).__name__}: {error}")))
            continue
        for unit_id, reward_index, response, gold in units:
            score, reason, error = score_unit(rewards[reward_index], response, gold)
            connection.send(("result", task_id, unit_id, score, reason, error))
            _reap_orphans()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--memory-limit-mb", type=int, default=0)
    parser.add_argument("--preload", action="append", default=[])
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)
    mark_reward_worker()
    # Ctrl-C in the caller's terminal is the caller's business; it shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = Connection(args.fd)
    try:
        _limit_memory(args.memory_limit_mb)
        _run_preload(args.preload)
    except BaseException as error:
        connection.send(("fatal", _short("".join(traceback.format_exception_only(error)))))
        sys.exit(1)
    connection.send(("ready", os.getpid()))
    serve(connection)


if __name__ == "__main__":
    main()
