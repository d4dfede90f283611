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
and closed them. Spawned Python children (the vLLM engine core) still honour a SIGTERM sent
by their own parent, which is how vLLM shuts its engine down, and die with their parent
(``PR_SET_PDEATHSIG``): see :func:`follow_parent`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
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
            self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self._watched)
            os.environ[RUN_PID_ENV] = str(os.getpid())
            self._watcher = threading.Thread(target=self._watch, name="r1core-signals", daemon=True)
            self._watcher.start()
        _ACTIVE = self
        return self

    def __exit__(self, *exc_info: Any) -> None:
        global _ACTIVE
        _ACTIVE = None
        if self._watcher is None:
            return
        self._closing.set()
        self._watcher.join()
        # Signals that arrived after the watcher stopped would hit their default action
        # (termination) once unblocked: the run is over, so they are dropped.
        while signal.sigtimedwait(self._watched, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask or set())
        os.environ.pop(RUN_PID_ENV, None)

    def _watch(self) -> None:
        while not self._closing.is_set():
            info = signal.sigtimedwait(self._watched, 0.2)
            if info is not None:
                self._received(info.si_signo)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum in self.stop_signals and self.graceful:
            if self.signal_name is None:
                self.signal_name, self._signum = name, signum
                print(f"r1core: {name} received: stopping after the current step, then saving a checkpoint "
                      f"(at most {self.timeout_s:.0f} s)", file=sys.stderr, flush=True)
                timer = threading.Timer(self.timeout_s, self._expire)
                timer.daemon = True
                timer.start()
            return
        if self.interrupted_by is not None:  # a second interrupt: no more clean-up
            print(f"r1core: {name} again: exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.interrupted_by = signum
        # Raises KeyboardInterrupt in the main thread at its next Python instruction.
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


def follow_parent() -> None:
    """For a Python process spawned during a run (``multiprocessing``'s spawn start method,
    which vLLM uses for its engine core): die with the parent (``PR_SET_PDEATHSIG``, so a
    trainer killed with SIGKILL leaves no engine holding memory), and honour a SIGTERM that
    the parent itself sends (vLLM's shutdown), while the SIGTERM a scheduler sends to every
    process stays blocked here as in the trainer.

    Does nothing outside a run's spawned children (no ``R1CORE_RUN_PID`` in the environment,
    or not started by ``multiprocessing``'s spawn).
    """
    run_pid = os.environ.get(RUN_PID_ENV)
    if not run_pid or int(run_pid) == os.getpid() or "--multiprocessing-fork" not in sys.argv:
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    if signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, set()):
        threading.Thread(target=_pass_parent_sigterm, args=(parent,), name="r1core-parent-sigterm",
                         daemon=True).start()


def _pass_parent_sigterm(parent: int) -> None:
    """Wait for SIGTERM (blocked in every thread); when the parent sent it, let it through to
    the process's own handler: unblocked in this thread alone, the re-sent signal is taken
    here and its Python handler runs in the main thread."""
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
