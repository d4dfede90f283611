"""How a run ends: stop signals, interrupts, the exit statuses, and the child processes that
end with the run.

Exit statuses of ``r1core train|sft|eval`` (also in ``r1core --help`` and the README):

====  =====================================================================================
0     the run finished
2     bad configuration, arguments or input (one line on stderr names the cause)
69    an optional dependency of the command is not installed
75    stopped by a stop signal (``checkpoint.stop_signals``: SIGTERM and SIGUSR1 by default)
      at a safe point: ``r1core train`` finished the step in progress and saved a checkpoint
      (continue with ``--resume``; a stop before the first RL step had nothing to save, and
      ``--resume-or-start`` starts over); ``r1core sft`` and ``eval`` stop without saving
130   interrupted by SIGINT (Ctrl-C): stopped at once, the newest checkpoint is kept
128+N the stop did not finish within ``checkpoint.stop_timeout_s`` after signal N (143 for
      SIGTERM, 138 for SIGUSR1): the run exited without a new checkpoint
====  =====================================================================================

:class:`RunControl` makes these hold. For the length of a command it blocks the stop signals
and SIGINT in the main thread and takes them on a watcher thread (``sigwaitinfo``). Every
thread and child process started during the run inherits the block, so a signal sent to every
process of a job (SLURM signals each process of a step at preemption and at the time limit; a
terminal sends Ctrl-C to its whole foreground group) reaches the trainer alone: the vLLM
engine and the reward workers keep working until the trainer has finished its step, saved,
and closed them. Spawned Python children (the vLLM engine core) die with their parent
(``PR_SET_PDEATHSIG``): see :func:`follow_parent`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from typing import Any, Optional

EXIT_OK = 0
EXIT_STOPPED = 75  # sysexits.h EX_TEMPFAIL: try again (resume)
EXIT_INTERRUPTED = 128 + signal.SIGINT

#: Signals a run takes over: those ``checkpoint.stop_signals`` may name
#: (``r1core.trainer.checkpoint.STOP_SIGNAL_NAMES``, kept equal by a test) and SIGINT.
WATCHED_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGINT")

#: Set by RunControl for the processes the run starts: the trainer's pid.
RUN_PID_ENV = "R1CORE_RUN_PID"

log = logging.getLogger("r1core")

_PR_SET_PDEATHSIG = 1


class StopRequested(Exception):
    """Raised at a safe point once a stop signal has arrived (on any rank)."""

    def __init__(self, signal_name: str, checkpoint: Optional[str] = None) -> None:
        where = f"checkpoint {checkpoint} saved" if checkpoint else "nothing to checkpoint yet"
        super().__init__(f"stopped by {signal_name}: {where}")
        self.signal_name = signal_name
        self.checkpoint = checkpoint


class RunControl:
    """Stop signals and SIGINT for the length of a command (see the module docstring).

    Args:
        stop_signals: names (``"SIGTERM"``, ``"SIGUSR1"``...) that ask for a graceful stop.
        timeout_s: longest time from a stop signal to the exit; past it the process exits at
            once with status 128 + the signal's number.
        graceful: whether the command checks :meth:`stop_requested` at safe points; when it
            does not (``r1core eval``), a stop signal interrupts it like SIGINT does.

    Only the main thread can take over the signals; elsewhere (a library call from a worker
    thread) the control is inert and the process keeps its signal handling.
    """

    def __init__(self, stop_signals: list[str] | tuple[str, ...] = ("SIGTERM", "SIGUSR1"), timeout_s: float = 300.0,
                 graceful: bool = True) -> None:
        self.signal_name: Optional[str] = None
        self.interrupted_by: Optional[int] = None
        self._signum: Optional[int] = None
        self._closing = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._previous_mask: Optional[set[int]] = None
        self._previous_handlers: dict[int, Any] = {}
        self._interrupt_pending = False
        self._deadline: threading.Timer | None = None  # the stop's time limit, once a stop signal came
        # Every signal a run may be configured to stop on is taken from the start (before the
        # configuration is read); one that is not a stop signal ends the run as SIGINT does,
        # with its own status, as its default action would.
        self._watched = {getattr(signal, name) for name in WATCHED_SIGNALS}
        self.configure(stop_signals, timeout_s, graceful)

    def configure(self, stop_signals: list[str] | tuple[str, ...], timeout_s: float, graceful: bool) -> None:
        """Set which signals stop the run gracefully (names of :data:`WATCHED_SIGNALS`), the
        time limit of a stop, and whether the command stops gracefully at all."""
        self.stop_signals = {getattr(signal, name) for name in stop_signals}
        unknown = sorted(set(stop_signals) - set(WATCHED_SIGNALS))
        if unknown:
            raise ValueError(f"not stop signals r1core handles: {unknown}")
        self.timeout_s = timeout_s
        self.graceful = graceful

    # ------------------------------------------------------------------ install

    def __enter__(self) -> "RunControl":
        global _ACTIVE
        if threading.current_thread() is threading.main_thread():
            # multiprocessing's resource tracker unblocks SIGINT and SIGTERM in the calling
            # thread when it first starts (as the first spawned process starts it): started
            # here, before the block, it leaves the block alone for the rest of the run.
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()
            # A thread started before this point (none in the r1core command; a test runner
            # may have some) does not block the signals: Python handlers catch what reaches
            # it, so no watched signal ever takes its default action during the run.
            self._previous_handlers = {signum: signal.signal(signum, self._handler) for signum in self._watched}
            self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self._watched)
            os.environ[RUN_PID_ENV] = str(os.getpid())
            self._watcher = threading.Thread(target=self._watch, name="r1core-signals", daemon=True)
            self._watcher.start()
        _ACTIVE = self
        return self

    def __exit__(self, *exc_info: Any) -> None:
        global _ACTIVE
        _ACTIVE = None
        if self._deadline is not None:
            # The run ended (stopped or not): its stop deadline must not end the process later
            # (a process that runs more than one command, such as a test session).
            self._deadline.cancel()
        if self._watcher is None:
            return
        self._closing.set()
        self._watcher.join()
        # Signals that arrived after the watcher stopped would hit their default action
        # (termination) once unblocked: the run is over, so they are dropped.
        while signal.sigtimedwait(self._watched, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask or set())
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        os.environ.pop(RUN_PID_ENV, None)

    def _watch(self) -> None:
        while not self._closing.is_set():
            info = signal.sigtimedwait(self._watched, 0.2)
            if info is not None:
                self._received(info.si_signo, in_main=False)

    def _handler(self, signum: int, frame: Any) -> None:
        """Python-level handler (main thread): a watched signal taken by a thread that does
        not block it, or the interrupt the watcher asked for."""
        if self._interrupt_pending and signum == signal.SIGINT:
            self._interrupt_pending = False
            raise KeyboardInterrupt
        self._received(signum, in_main=True)

    def _received(self, signum: int, in_main: bool) -> None:
        name = signal.Signals(signum).name
        if signum in self.stop_signals and self.graceful:
            if self.signal_name is None:
                self.signal_name, self._signum = name, signum
                print(f"r1core: {name} received: stopping at the end of the current step (within "
                      f"{self.timeout_s:g} s)", file=sys.stderr, flush=True)
                self._deadline = threading.Timer(self.timeout_s, self._expire)
                self._deadline.daemon = True
                self._deadline.start()
            return
        if self.interrupted_by is not None:  # a second interrupt: no more clean-up
            print(f"r1core: {name} again: exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.interrupted_by = signum
        if in_main:
            raise KeyboardInterrupt
        # Runs the SIGINT handler (_handler) in the main thread at its next Python
        # instruction, which raises KeyboardInterrupt there.
        self._interrupt_pending = True
        import _thread

        _thread.interrupt_main(signal.SIGINT)

    def _expire(self) -> None:
        print(f"r1core: no checkpoint within checkpoint.stop_timeout_s={self.timeout_s:g} s of {self.signal_name}: "
              f"exiting without one", file=sys.stderr, flush=True)
        os._exit(128 + (self._signum or signal.SIGTERM))

    # ------------------------------------------------------------------ queries

    def stop_requested(self, topology: Any = None) -> bool:
        """Whether a stop signal has arrived, on this rank or (with a distributed
        ``topology``) any rank: one tiny all-reduce over the world, so every rank stops at the
        same step. Call it at the same points on every rank."""
        local = self.signal_name is not None
        if topology is None or not topology.distributed:
            return local
        import torch
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([1.0 if local else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.signal_name is None:
            self.signal_name = "a stop signal on another rank"
        return bool(flag.item())

    def exit_status_for_interrupt(self) -> int:
        """Status of a run ended by KeyboardInterrupt: 130, or 128 + N for a stop signal N
        that interrupted a command which does not stop gracefully."""
        return 128 + (self.interrupted_by or signal.SIGINT)


class _Inert(RunControl):
    """The control seen when no command installed one (library use, tests): no stop ever."""

    def stop_requested(self, topology: Any = None) -> bool:
        return False


_ACTIVE: Optional[RunControl] = None


def active_control() -> RunControl:
    """The :class:`RunControl` of the running command, or an inert one."""
    return _ACTIVE if _ACTIVE is not None else _Inert(graceful=False)


def follow_parent() -> bool:
    """For a Python process spawned during a run (``multiprocessing``'s spawn start method,
    which vLLM uses for its engine core, imports the run's main module, ``r1core.cli``,
    which calls this): die with the parent (``PR_SET_PDEATHSIG``), so that a trainer killed
    with SIGKILL leaves no engine holding memory or a GPU. The stop signals stay blocked here,
    as inherited: such a process ends when its parent closes it (vLLM escalates to SIGKILL
    after its grace period) or dies.

    Does nothing outside a run's children (``R1CORE_RUN_PID`` names the parent). Returns
    whether this is such a child; its own spawned children (vLLM's workers under the engine
    core) are tied to it in turn.
    """
    run_pid = os.environ.get(RUN_PID_ENV)
    parent = os.getppid()
    if not run_pid or int(run_pid) != parent:
        return False
    os.environ[RUN_PID_ENV] = str(os.getpid())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return True
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    return True
