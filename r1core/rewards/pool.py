"""A persistent pool of reward worker processes with a per-sample timeout.

Why processes, and why these: math-verify (sympy) can hang or recurse without bound on
pathological answers, and its own timeout is a ``signal.alarm`` that only works in a main
thread and cannot interrupt C-level work (see ``r1core.rewards.math``). Here each worker is a
fresh interpreter (``python -m r1core.rewards.worker``) talking over a socket pair — not a
fork of the caller (unsafe beside torch's threads and CUDA state) and not a multiprocessing
``spawn`` child (which re-imports the caller's ``__main__``, often a whole training script).

Scheduling: samples are sent in chunks of ``chunk_size`` (one message per chunk amortises
IPC), but every result comes back on its own, and the timeout is per sample: a sample that
overruns ``sample_timeout_s`` gets its worker SIGKILLed and replaced, scores 0 with the reason
"timeout", and the rest of its chunk is re-queued — so one pathological sample never costs its
neighbours. A worker that dies (``os._exit``, segfault, memory limit) is handled the same way,
with the exit status as the reason. Exceptions inside a reward are caught in the worker.

Threads: one dispatcher thread owns the workers and runs batches in order; ``submit`` blocks
when ``max_pending_batches`` are waiting (bounded queueing), ``score`` is ``submit().result()``.
The thread keeps the pool alive: call ``close()`` or use ``with`` (at interpreter exit the
workers die with the process).
Workers ask the kernel to kill them when that thread exits (``PR_SET_PDEATHSIG``), so even a
SIGKILLed caller leaves no worker behind; ``close()`` (or the context manager) stops them.

Process trees: a worker is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so whatever a
reward starts stays in the worker's tree even after a double fork and ``setsid``. Killing a
worker (timeout, death, ``close()``) stops it, SIGKILLs every descendant until none is left,
then its process group and itself, and removes the sandbox cgroups and folders it left mid-run.
A worker that stops normally kills its own descendants first. One gap remains: when the caller
itself is SIGKILLed, the kernel kills the workers, but processes a reward started (outside the
code sandbox, whose programs die with their worker) are re-parented and keep running.

``default_pool()`` is the process's shared pool behind direct calls of registered rewards
(see ``r1core.rewards.registry``); ``set_default_pool_config`` changes its settings.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from collections.abc import Sequence
from typing import Any

from r1core.rewards.calls import RewardFn, WeightedRewards, check_batch
from r1core.rewards.process_tree import kill_group, kill_process_tree
from r1core.rewards.sandbox import remove_sandbox_leftovers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardPoolConfig:
    """Settings of ``RewardPool``.

    Fields:
        num_workers: worker processes (each scores one sample at a time).
        sample_timeout_s: wall-clock budget of one sample; past it the worker is killed and
            the sample scores 0 with reason "timeout".
        chunk_size: samples per message to a worker (larger amortises IPC; results still
            come back per sample).
        memory_limit_mb: RLIMIT_AS of each worker (None: unlimited); a sample exceeding it
            scores 0 (MemoryError, or the worker dies and is replaced).
        preload: "module" or "module:function" hooks each worker runs before it reports ready
            (imports and first-call set-up are never charged to a sample's timeout).
        startup_timeout_s: a worker not ready after this long is killed and the batch fails.
        max_samples_per_worker: replace a worker after this many samples (None: never);
            bounds slow growth of caches inside long-lived workers.
        max_pending_batches: ``submit`` blocks while this many batches wait.
    """

    num_workers: int = 2
    sample_timeout_s: float = 10.0
    chunk_size: int = 8
    memory_limit_mb: int | None = 3072
    preload: tuple[str, ...] = ("r1core.rewards.math:warmup",)
    startup_timeout_s: float = 120.0
    max_samples_per_worker: int | None = None
    max_pending_batches: int = 4

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.chunk_size < 1 or self.max_pending_batches < 1:
            raise ValueError(f"num_workers, chunk_size, max_pending_batches must be >= 1: {self}")
        if self.sample_timeout_s <= 0:
            raise ValueError(f"sample_timeout_s must be > 0, got {self.sample_timeout_s}")


@dataclass
class PoolResult:
    """Scores of one batch: ``scores[i]`` for sample i, and ``reasons[i]`` (None if it ran
    normally, else why it scored 0: "timeout after 10.0 s", "worker died (SIGSEGV)", an
    exception, ...); ``errors[i]`` is the exception the reward raised on sample i, if any."""

    scores: list[float]
    reasons: list[str | None]
    errors: list[BaseException | None] = field(default_factory=list)

    @property
    def num_failed(self) -> int:
        return sum(reason is not None for reason in self.reasons)

    def raise_first_error(self) -> None:
        """Re-raise the first exception a reward raised (direct calls behave like plain
        functions: a bad config or gold raises; hangs and crashes only score 0)."""
        for error in self.errors:
            if error is not None:
                raise error


@dataclass
class CompositeResult:
    """A composite batch: weighted ``totals``, unweighted ``components`` by name, and the
    failure ``reasons`` per component (None where the sample ran normally)."""

    totals: list[float]
    components: dict[str, list[float]]
    reasons: dict[str, list[str | None]]
    errors: list[BaseException | None] = field(default_factory=list)

    def raise_first_error(self) -> None:
        """Re-raise the first exception a component raised (see ``PoolResult``)."""
        PoolResult([], [], self.errors).raise_first_error()


@dataclass
class _Worker:
    process: subprocess.Popen
    connection: Connection
    ready: bool = False
    started_at: float = field(default_factory=time.monotonic)
    task: list[int] | None = None  # unit ids of the chunk in flight
    position: int = 0  # index in ``task`` of the unit running now
    deadline: float = 0.0
    samples_done: int = 0


class RewardPoolError(RuntimeError):
    """The pool cannot score at all (workers fail to start, a reward cannot be loaded)."""


def _check_picklable_by_reference(reward: Any) -> None:
    function = getattr(reward, "func", reward)
    if getattr(function, "__module__", None) == "__main__":
        raise TypeError(
            f"reward {function!r} is defined in __main__, which the worker processes cannot "
            "import; define it in an importable module"
        )


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"worker died ({signal.Signals(-code).name})"
        except ValueError:
            return f"worker died (signal {-code})"
    return f"worker died (exit code {code})"


class RewardPool:
    """Score rewards in worker processes; a hung, crashing or raising sample scores 0.

    Example::

        with RewardPool(RewardPoolConfig(num_workers=2)) as pool:
            result = pool.score(get_reward("math_accuracy"), responses, golds)
            result.scores, result.reasons
    """

    def __init__(self, config: RewardPoolConfig | None = None) -> None:
        self.config = config or RewardPoolConfig()
        self._jobs: queue.Queue = queue.Queue(maxsize=self.config.max_pending_batches)
        self._workers: list[_Worker] = []
        self._closed = False
        self._task_counter = 0
        self._thread = threading.Thread(target=self._dispatch_loop, name="reward-pool", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- public API
    def submit(
        self, rewards: list[RewardFn], units: list[tuple[int, str, str]],
        sample_timeout_s: float | Sequence[float] | None = None,
    ) -> Future:
        """Queue ``units`` (reward index, response, gold); the future gives a ``PoolResult``.

        ``sample_timeout_s``: per-sample budget of this batch (one value, or one per reward);
        default ``config.sample_timeout_s``."""
        if self._closed:
            raise RuntimeError("the reward pool is closed")
        for reward in rewards:
            _check_picklable_by_reference(reward)
        try:
            blob = pickle.dumps(list(rewards))
        except Exception as error:
            raise TypeError(f"rewards must be picklable (module-level functions or get_reward "
                            f"results): {error}") from error
        if sample_timeout_s is None:
            timeouts = [self.config.sample_timeout_s] * len(rewards)
        elif isinstance(sample_timeout_s, (int, float)):
            timeouts = [float(sample_timeout_s)] * len(rewards)
        else:
            timeouts = [float(value) for value in sample_timeout_s]
        if len(timeouts) != len(rewards) or min(timeouts, default=1.0) <= 0:
            raise ValueError(f"sample_timeout_s needs one positive value per reward, got {sample_timeout_s!r}")
        future: Future = Future()
        self._jobs.put((blob, list(units), timeouts, future))
        return future

    def score(self, reward: RewardFn, responses: list[str], golds: list[str],
              sample_timeout_s: float | None = None) -> PoolResult:
        """Score one reward on a batch; blocks until every sample has a score."""
        check_batch(responses, golds)
        units = [(0, response, gold) for response, gold in zip(responses, golds)]
        return self.submit([reward], units, sample_timeout_s).result()

    def score_composite(
        self, composite: WeightedRewards, responses: list[str], golds: list[str],
        sample_timeout_s: float | Sequence[float] | None = None,
    ) -> CompositeResult:
        """Score every component of ``composite``; each (component, sample) is isolated."""
        check_batch(responses, golds)
        rewards = [component.reward for component in composite.components]
        units = [
            (index, response, gold)
            for index in range(len(rewards))
            for response, gold in zip(responses, golds)
        ]
        result = self.submit(rewards, units, sample_timeout_s).result()
        scores, reasons = result.scores, result.reasons
        size = len(responses)
        components, component_reasons = {}, {}
        for index, component in enumerate(composite.components):
            components[component.name] = scores[index * size : (index + 1) * size]
            component_reasons[component.name] = reasons[index * size : (index + 1) * size]
        return CompositeResult(composite.combine(components), components, component_reasons, result.errors)

    def close(self) -> None:
        """Stop the dispatcher and every worker (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._thread.join()

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and monitoring)."""
        return [worker.process.pid for worker in list(self._workers)]

    # ----------------------------------------------------------------- workers
    def _start_worker(self) -> _Worker:
        parent_end, child_end = socket.socketpair()
        command = [sys.executable, "-m", "r1core.rewards.worker", "--fd", str(child_end.fileno()),
                   "--parent-pid", str(os.getpid())]
        if self.config.memory_limit_mb:
            command += ["--memory-limit-mb", str(self.config.memory_limit_mb)]
        for hook in self.config.preload:
            command += ["--preload", hook]
        environment = dict(os.environ)
        # The worker must import what the caller can (rewards are pickled by reference).
        paths = [path for path in sys.path if path and os.path.isdir(path)]
        environment["PYTHONPATH"] = os.pathsep.join(paths)
        process = subprocess.Popen(
            command, pass_fds=(child_end.fileno(),), env=environment, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        child_end.close()
        connection = Connection(parent_end.detach())
        return _Worker(process, connection)

    def _stop_worker(self, worker: _Worker, graceful: bool) -> int | None:
        pid = worker.process.pid
        try:
            if graceful:
                try:
                    worker.connection.send(("stop",))
                    code = worker.process.wait(timeout=2.0)
                    kill_group(pid)  # anything of the worker's group that outlived it
                    return code
                except (OSError, subprocess.TimeoutExpired):
                    pass
            kill_process_tree(pid)
            code = worker.process.wait(timeout=5.0)
            # A worker killed inside a code sample never removed its sandbox cgroups or folders.
            remove_sandbox_leftovers(pid)
            return code
        finally:
            worker.connection.close()

    def _replace(self, worker: _Worker, graceful: bool = False) -> int | None:
        code = self._stop_worker(worker, graceful)
        self._workers[self._workers.index(worker)] = self._start_worker()
        return code

    # ----------------------------------------------------------------- dispatch
    def _dispatch_loop(self) -> None:
        self._workers = [self._start_worker() for _ in range(self.config.num_workers)]
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                blob, units, timeouts, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(self._run(blob, units, timeouts))
                except BaseException as error:
                    # Workers still busy with the failed batch would answer it later; replace
                    # them so the next batch starts clean.
                    for worker in list(self._workers):
                        if worker.task is not None:
                            worker.task = None
                            self._replace(worker)
                    future.set_exception(error)
        finally:
            for worker in self._workers:
                self._stop_worker(worker, graceful=True)
            self._workers = []

    def _run(self, blob: bytes, units: list[tuple[int, str, str]], timeouts: list[float]) -> PoolResult:
        config = self.config
        scores: list[float] = [0.0] * len(units)
        reasons: list[str | None] = [None] * len(units)
        errors: list[BaseException | None] = [None] * len(units)
        remaining = len(units)
        pending = collections.deque(
            list(range(start, min(start + config.chunk_size, len(units))))
            for start in range(0, len(units), config.chunk_size)
        )
        self._task_counter += 1
        task_id = self._task_counter
        startup_failures = 0

        def fail_unit(worker: _Worker, reason: str) -> None:
            nonlocal remaining
            unit = worker.task[worker.position]
            scores[unit], reasons[unit] = 0.0, reason
            remaining -= 1
            rest = worker.task[worker.position + 1 :]
            if rest:
                pending.appendleft(rest)
            worker.task = None
            logger.warning("reward sample %d scored 0: %s", unit, reason)

        def receive(worker: _Worker) -> None:
            """Read and apply one message of ``worker`` (or its death)."""
            nonlocal remaining, startup_failures
            try:
                message = worker.connection.recv()
            except (EOFError, OSError):
                code = self._replace(worker)
                if not worker.ready:
                    startup_failures += 1
                    if startup_failures > 2 * config.num_workers:
                        raise RewardPoolError(f"reward workers fail to start: {_describe_exit(code)}")
                elif worker.task is not None:
                    fail_unit(worker, _describe_exit(code))
                return
            kind = message[0]
            if kind == "ready":
                worker.ready = True
            elif kind == "fatal":
                self._replace(worker)
                raise RewardPoolError(f"reward worker failed to start: {message[1]}")
            elif kind == "task_error":
                self._replace(worker)
                raise RewardPoolError(f"reward worker cannot load the rewards: {message[2]}")
            elif kind == "result" and message[1] == task_id and worker.task is not None:
                _, _, unit, score, reason, error = message
                scores[unit], reasons[unit] = score, reason
                if error is not None:
                    try:
                        errors[unit] = pickle.loads(error)
                    except Exception:  # defined in a module this process cannot import
                        errors[unit] = RewardPoolError(reason)
                remaining -= 1
                if reason is not None:
                    logger.warning("reward sample %d scored 0: %s", unit, reason)
                worker.samples_done += 1
                worker.position += 1
                if worker.position < len(worker.task):
                    worker.deadline = time.monotonic() + timeouts[units[worker.task[worker.position]][0]]
                if worker.position == len(worker.task):
                    worker.task = None
                    limit = config.max_samples_per_worker
                    if limit is not None and worker.samples_done >= limit:
                        self._replace(worker, graceful=True)

        while remaining:
            now = time.monotonic()
            for worker in self._workers:
                if worker.ready and worker.task is None and pending:
                    chunk = pending.popleft()
                    payload = [(u, units[u][0], units[u][1], units[u][2]) for u in chunk]
                    worker.connection.send(("task", task_id, blob, payload))
                    worker.task, worker.position = chunk, 0
                    worker.deadline = time.monotonic() + timeouts[units[chunk[0]][0]]
            deadlines = [w.deadline for w in self._workers if w.task is not None]
            deadlines += [w.started_at + config.startup_timeout_s for w in self._workers if not w.ready]
            wait_s = max(0.0, min(deadlines) - now) if deadlines else 1.0
            for connection in wait([w.connection for w in self._workers], timeout=min(wait_s, 1.0)):
                worker = next((w for w in self._workers if w.connection is connection), None)
                if worker is not None:
                    receive(worker)
            now = time.monotonic()
            for worker in list(self._workers):
                # A result may have arrived after wait() returned: read it before judging.
                while worker in self._workers and worker.task is not None and worker.connection.poll(0):
                    receive(worker)
                if worker not in self._workers:
                    continue
                if worker.task is not None and time.monotonic() > worker.deadline:
                    timeout = timeouts[units[worker.task[worker.position]][0]]
                    self._replace(worker)
                    fail_unit(worker, f"timeout after {timeout:g} s")
                elif not worker.ready and now > worker.started_at + config.startup_timeout_s:
                    self._replace(worker)
                    raise RewardPoolError(
                        f"a reward worker was not ready after {config.startup_timeout_s:g} s"
                    )
        return PoolResult(scores, reasons, errors)


# ----------------------------------------------------------------------------- default pool

_default: dict[str, Any] = {"pool": None, "pid": None, "config": RewardPoolConfig()}
_default_lock = threading.Lock()


def default_pool() -> RewardPool:
    """The process's shared pool behind direct reward calls (started on first use; a forked
    child gets its own, since the parent's dispatcher thread does not exist there)."""
    with _default_lock:
        pool = _default["pool"]
        if pool is None or _default["pid"] != os.getpid() or pool._closed:
            pool = RewardPool(_default["config"])
            _default["pool"], _default["pid"] = pool, os.getpid()
        return pool


def set_default_pool_config(config: RewardPoolConfig) -> None:
    """Settings of the default pool (e.g. ``sample_timeout_s``); a running one is closed and
    the next direct reward call starts a new one."""
    with _default_lock:
        pool, _default["pool"], _default["config"] = _default["pool"], None, config
    if pool is not None and _default["pid"] == os.getpid():
        pool.close()


def _close_default_pool() -> None:
    pool = _default["pool"]
    if pool is not None and _default["pid"] == os.getpid():
        pool.close()


atexit.register(_close_default_pool)
