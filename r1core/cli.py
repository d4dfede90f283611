"""The ``r1core`` command: ``train``, ``sft``, ``eval`` and ``launch``.

``train``, ``sft`` and ``eval`` assemble a :class:`~r1core.config.RunConfig` from
``--config run.yaml`` and ``dotted.key=value`` overrides first; an unknown or mistyped key
stops the command there, before any model, process group or file is created. They then
hand the configuration to the command's ``run(cfg)`` function in :mod:`r1core.commands`
(table below), which is imported only at that point so the command stays quick and light.

Exit status: 0 success, 2 bad configuration, arguments or input (a malformed data row, a
layout that does not fit the world size, a run folder that already holds a run), 69 one of
the command's optional dependencies is not part of this installation, otherwise what the
command returns. Input errors print one line naming the
cause; ``R1CORE_TRACEBACK=1`` prints the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_CONFIG_ERROR = 2
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE

@dataclass(frozen=True)
class Command:
    """A run command: ``module.run(cfg)`` does the work."""

    module: str
    help: str
    resumable: bool


COMMANDS: dict[str, Command] = {
    "train": Command("r1core.commands.train", "RL training: GRPO and its variants", resumable=True),
    "sft": Command("r1core.commands.sft", "supervised fine-tuning: cold start, distillation from jsonl traces",
                   resumable=True),
    "eval": Command("r1core.commands.eval", "evaluate a checkpoint: avg@k, pass@k, maj@k", resumable=False),
}


class UnavailableError(RuntimeError):
    """The module behind a command is not part of this installation."""


def build_run_parser(command: str) -> argparse.ArgumentParser:
    """Parser of ``r1core train|sft|eval``: options and overrides may be intermixed."""
    parser = argparse.ArgumentParser(prog=f"r1core {command}", description=COMMANDS[command].help)
    parser.add_argument("--config", metavar="YAML", help="run configuration file")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration and exit"
    )
    if COMMANDS[command].resumable:
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue from the newest checkpoint (same as checkpoint.resume=true)",
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
    from r1core.config import ConfigError, RunConfig, dump_config, load_config

    overrides = list(args.overrides)
    if getattr(args, "resume", False):
        overrides.append("checkpoint.resume=true")
    try:
        config = load_config(RunConfig, args.config, overrides)
    except ConfigError as error:
        print(f"r1core {command}: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.print_config:
        sys.stdout.write(dump_config(config))
        return 0
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
        from r1core._extras import MissingExtraError

        print(f"r1core {command}: error: {error}", file=sys.stderr)
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

    return (ConfigError, DataFormatError, LayoutError, MissingExtraError, FileExistsError, FileNotFoundError,
            UnsupportedModelError, CheckpointMismatchError)


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
