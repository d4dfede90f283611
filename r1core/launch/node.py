"""The per-node launcher: torchrun's agent, with the run's exit status and stop signals kept.

``python -m r1core.launch.node [--status-file PATH] -- TORCHRUN_ARGS...`` runs torchrun (its
elastic agent, in this process) with ``TORCHRUN_ARGS`` and differs from ``torchrun`` in three
ways that a scheduler needs:

* **Exit status.** torchrun exits with 1 whatever its workers returned; here the status is
  the first failed worker's own (2 for a bad configuration, 75 for a stop after a checkpoint,
  128 + N for a worker killed by signal N), and 0 when every worker succeeded. With
  ``--status-file`` it is also written there (``<unix time> <status>``), so the job script
  can name the first failure across nodes (:func:`first_failure`).
* **Stop signals.** The stop signals a run handles (SIGTERM, SIGUSR1, SIGUSR2, SIGHUP) are
  blocked here before the workers start, and the workers inherit the block; a thread takes
  them and passes each on to the workers. SLURM signals the task's own process (this one) for
  ``scancel --signal`` and ``#SBATCH --signal=USR1@300``, and every process of the step at
  preemption and at the time limit; torchrun's agent would otherwise end the workers
  (SIGTERM) or die (SIGUSR1, whose default action is to terminate) while they finish their
  step and save a checkpoint. Each worker takes the signal itself
  (:mod:`r1core.commands.lifecycle`) and exits with 75; the agent then reports that status.
* **Node rank.** Under SLURM without an explicit ``--node-rank``, the node rank is
  ``SLURM_NODEID`` (the allocation's order), so global ranks follow the node list on every
  submission instead of the order in which agents reach the rendezvous.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

#: Signals the agent leaves to its workers (see the module docstring).
SHIELDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


def status_of_exitcode(exitcode: int) -> int:
    """A process's status as a shell reports it: ``-N`` (killed by signal N) is 128 + N."""
    return 128 - exitcode if exitcode < 0 else exitcode


def first_failure(paths: Sequence[str | os.PathLike[str]]) -> int:
    """The status of the earliest failure among status files (lines ``<time> <status>``), or
    0 when every file says 0 (or none could be read)."""
    failures = []
    for path in paths:
        try:
            for line in Path(path).read_text().splitlines():
                stamp, status = line.split()[:2]
                if int(status):
                    failures.append((float(stamp), int(status)))
        except (OSError, ValueError):
            continue
    return min(failures)[1] if failures else 0


def with_node_rank(torchrun_args: list[str]) -> list[str]:
    """``torchrun_args`` with ``--node-rank=$SLURM_NODEID`` added for a multi-node static
    rendezvous under SLURM (none is added when one is given or outside SLURM)."""
    given = any(arg.startswith(("--node-rank", "--node_rank")) for arg in torchrun_args)
    standalone = "--standalone" in torchrun_args
    if given or standalone or "SLURM_NODEID" not in os.environ:
        return torchrun_args
    return [f"--node-rank={os.environ['SLURM_NODEID']}", *torchrun_args]


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may hold spaces and parentheses: the fields follow the last ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _pass_on_signals() -> None:
    """Take every shielded signal sent to the agent and send it to the workers (the agent's
    direct children)."""
    while True:
        info = signal.sigwaitinfo(set(SHIELDED_SIGNALS))
        workers = children(os.getpid())
        for pid in workers:
            try:
                os.kill(pid, info.si_signo)
            except ProcessLookupError:
                pass
        print(f"r1core: {signal.Signals(info.si_signo).name} passed on to {len(workers)} worker(s)",
              file=sys.stderr, flush=True)


def run_agent(torchrun_args: list[str]) -> tuple[int, float]:
    """Run torchrun's agent in this process; ``(status, time of the first failure)``."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(torchrun_args))
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        status = status_of_exitcode(int(failure.exitcode))
        print(f"r1core: rank {rank} exited first, with status {status}{_signal_note(status)}", file=sys.stderr)
        return status, float(failure.timestamp or time.time())
    return 0, time.time()


def _signal_note(status: int) -> str:
    if status <= 128:
        return ""
    try:
        return f" ({signal.Signals(status - 128).name})"
    except ValueError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m r1core.launch.node``); returns the status to exit with."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m r1core.launch.node [--status-file PATH] -- TORCHRUN_ARGS...", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m r1core.launch.node")
    parser.add_argument("--status-file", help="append '<unix time> <status>' here when the workers are done")
    own = parser.parse_args(argv[:split])
    # Before the agent starts any worker (and any thread): every one of them inherits it.
    signal.pthread_sigmask(signal.SIG_BLOCK, set(SHIELDED_SIGNALS))
    threading.Thread(target=_pass_on_signals, name="r1core-pass-signals", daemon=True).start()
    status, when = run_agent(with_node_rank(argv[split + 1:]))
    if own.status_file:
        Path(own.status_file).parent.mkdir(parents=True, exist_ok=True)
        with open(own.status_file, "a") as handle:
            handle.write(f"{when:.6f} {status}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
