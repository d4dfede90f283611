"""The ``r1core`` command: ``train``, ``sft``, ``eval`` and ``launch``.

``train``, ``sft`` and ``eval`` assemble a :class:`~r1core.config.RunConfig` from
``--config run.yaml`` and ``dotted.key=value`` overrides first and check it whole: every
section's values, the files it names (a model's ``config.json``, a data file) and, for
``train`` and ``sft``, the layout and the batch split against the world size. A wrong input
stops the command there, in one line, before any model, process group or file is created.
They then hand the configuration to the command's ``run(cfg)`` function in
:mod:`r1core.commands` (table below), which is imported only at that point so the command
stays quick and light.

Exit status (:mod:`r1core.commands.lifecycle` says more): 0 success; 2 bad configuration,
arguments or input (a malformed data row, a layout that does not fit the world size, a run
folder that already holds a run, a resume that does not fit its checkpoint); 69 one of the
command's optional dependencies is not part of this installation; 75 stopped by a stop signal
(SIGTERM, SIGUSR1) after saving a checkpoint; 130 interrupted by SIGINT; 128+N the stop did
not finish within ``checkpoint.stop_timeout_s`` of signal N; otherwise what the command
returns, and 1 for an error inside r1core (with its traceback). Input errors print one line
naming the cause; ``R1CORE_TRACEBACK=1`` prints the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1core.commands.lifecycle import RunControl, follow_parent

EXIT_CONFIG_ERROR = 2
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE

# A Python process the run spawns (vLLM's engine core) imports this module as its main module:
# there it ties itself to its parent (see follow_parent) and keeps the run's quiet console.
if follow_parent() and os.environ.get("VLLM_LOGGING_LEVEL") == "WARNING":
    from r1core.rollout.vllm_rollout import quiet_spawned_engine

    quiet_spawned_engine()

@dataclass(frozen=True)
class Command:
    """A run command: ``module.run(cfg)`` does the work."""

    module: str
    help: str
    resumable: bool


COMMANDS: dict[str, Command] = {
    "train": Command("r1core.commands.train", "RL training: GRPO and its variants", resumable=True),
    "sft": Command("r1core.commands.sft", "supervised fine-tuning: cold start, distillation from jsonl traces",
                   resumable=False),
    "eval": Command("r1core.commands.eval", "evaluate a checkpoint: avg@k, pass@k, maj@k", resumable=False),
}


class UnavailableError(RuntimeError):
    """The module behind a command is not part of this installation."""


def build_run_parser(command: str) -> argparse.ArgumentParser:
    """Parser of ``r1core train|sft|eval``: options and overrides may be intermixed."""
    parser = argparse.ArgumentParser(prog=f"r1core {command}", description=COMMANDS[command].help)
    parser.add_argument("--config", metavar="YAML", help="run configuration file")
    parser.add_argument(
        "--print-config", action="store_true",
        help="print the resolved configuration, each key with its documentation, and exit"
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the libraries' own messages too (same as logging.verbose=true)")
    if COMMANDS[command].resumable:
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue from the newest intact checkpoint; refused if there is none (checkpoint.resume=true)",
        )
        parser.add_argument(
            "--resume-or-start", action="store_true",
            help="continue from the newest intact checkpoint, or start from the beginning if there is none yet "
                 "(checkpoint.resume=true checkpoint.start_if_none=true): the command to requeue a job with",
        )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. run.seed=7")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """Top-level parser: only names the subcommands (each parses its own arguments)."""
    parser = argparse.ArgumentParser(prog="r1core", description="DeepSeek-R1-style RL for LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help)
    sub.add_parser("launch", help="plan layouts; print torchrun/SLURM launch commands")
    return parser


def resolve_entry_point(command: str) -> Callable[[Any], Any]:
    """The ``run`` function behind ``command``.

    Raises:
        UnavailableError: its module is not present in this installation. An import error
            raised *inside* an existing module is a bug and propagates unchanged.
    """
    module_name = COMMANDS[command].module
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise UnavailableError(
                f"r1core {command}: {module_name} is not part of this installation; the "
                "configuration was validated and nothing was run"
            ) from error
        raise
    return module.run


def _run_component(command: str, args: argparse.Namespace) -> int:
    # Before anything else, so every thread and process the run starts inherits the signal
    # block (see r1core.commands.lifecycle).
    with RunControl(graceful=False) as control:
        try:
            return _configured_run(command, args, control)
        except KeyboardInterrupt:
            name = signal.Signals(control.interrupted_by or signal.SIGINT).name
            print(f"r1core {command}: interrupted by {name}; the newest checkpoint (if any) is kept",
                  file=sys.stderr)
            return control.exit_status_for_interrupt()


def _configured_run(command: str, args: argparse.Namespace, control: RunControl) -> int:
    from r1core._extras import MissingExtraError
    from r1core.config import RunConfig, dump_config, load_config

    overrides = list(args.overrides)
    if getattr(args, "resume", False):
        overrides.append("checkpoint.resume=true")
    if getattr(args, "resume_or_start", False):
        overrides += ["checkpoint.resume=true", "checkpoint.start_if_none=true"]
    if args.verbose:
        overrides.append("logging.verbose=true")
    try:
        config = load_config(RunConfig, args.config, overrides)
        if command in ("train", "sft") and not args.print_config:
            config.check_world(int(os.environ.get("WORLD_SIZE", "1")))
    except MissingExtraError as error:
        print(f"r1core {command}: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except input_errors() as error:
        if os.environ.get("R1CORE_TRACEBACK"):
            raise
        print(f"r1core {command}: configuration error: {one_line(error)}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.print_config:
        from r1core.config.docs import describe_config

        sys.stdout.write(describe_config(config))
        return 0
    if config.checkpoint.resume and not COMMANDS[command].resumable:
        print(f"r1core {command}: configuration error: checkpoint.resume: r1core {command} does not resume "
              "(it saves no checkpoint to continue from)", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    control.configure(config.checkpoint.stop_signals, config.checkpoint.stop_timeout_s,
                      graceful=command in ("train", "sft"))
    from r1core.commands.console import configure_console

    configure_console(config.logging, rank=int(os.environ.get("RANK", "0")))
    try:
        run = resolve_entry_point(command)
    except UnavailableError as error:
        print(error, file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        if os.environ.get("RANK", "0") == "0":
            dump_config(config, _config_record_path(Path(config.run.directory)))
        result = run(config)
    except input_errors() as error:
        if os.environ.get("R1CORE_TRACEBACK"):
            raise
        print(f"r1core {command}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_UNAVAILABLE if isinstance(error, MissingExtraError) else EXIT_CONFIG_ERROR
    return result if isinstance(result, int) else 0


def _config_record_path(run_dir: Path) -> Path:
    """Where this invocation records its configuration: ``config.yaml``, or, when the folder
    already has one (a resumed or refused run), a timestamped sibling, so that no earlier
    record is overwritten."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return path
    import time

    return run_dir / f"config.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}.yaml"


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (a layout error lists its broken rules with '; ')."""
    problems = getattr(error, "problems", None)
    if isinstance(problems, list) and problems:
        return "impossible parallel layout: " + "; ".join(problems)
    return " ".join(str(error).split())


def input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user's input is wrong, not that r1core is: reported in one line.

    Everything else (a bug, an engine crash) keeps its traceback.
    """
    from r1core._extras import MissingExtraError
    from r1core.config import ConfigError
    from r1core.data.records import DataFormatError
    from r1core.models.shape import UnsupportedModelError
    from r1core.parallel.layout import LayoutError
    from r1core.trainer.checkpoint import CheckpointMismatchError
    from r1core.trainer.run_logger import CorruptRunLogError

    return (ConfigError, DataFormatError, LayoutError, MissingExtraError, FileExistsError, FileNotFoundError,
            UnsupportedModelError, CheckpointMismatchError, CorruptRunLogError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``r1core`` console script; returns the exit status."""
    # Intel MKL picks GEMM code paths by buffer alignment, so the same run can round
    # differently from one process to the next; conditional numerical reproducibility
    # (fastest path for this processor, fixed per machine) makes a resumed CPU run equal
    # the uninterrupted one bit for bit. CNR also needs a thread count MKL and OpenMP do
    # not lower at run time (MKL's documented reproducibility conditions). Read when MKL
    # first loads, hence before torch.
    os.environ.setdefault("MKL_CBWR", "AUTO")
    os.environ.setdefault("MKL_DYNAMIC", "FALSE")
    os.environ.setdefault("OMP_DYNAMIC", "FALSE")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not {"-v", "--verbose", "logging.verbose=true"} & set(argv):
        # torch's C++ warnings go straight to stderr, past Python's logging and filters (on
        # CPU, vLLM's worker set-up prints a NUMA-binding note this way); -v shows them.
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
        # multiprocessing's resource tracker (a process of its own, started with the run,
        # which reads this) reports the semaphores and shared memory of vLLM's force-killed
        # engine processes as it removes them.
        harmless = "ignore:resource_tracker:UserWarning"
        if harmless not in os.environ.get("PYTHONWARNINGS", ""):
            os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), harmless]))
    # launch owns its argument parsing; everything after the word goes to it.
    if argv and argv[0] == "launch":
        from r1core.launch.cli import main as launch_main

        return launch_main(argv[1:])
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv[:1])  # prints usage or help and exits
    args = build_run_parser(argv[0]).parse_intermixed_args(argv[1:])
    return _run_component(argv[0], args)


if __name__ == "__main__":  # `torchrun -m r1core.cli train ...` starts here
    sys.exit(main())
