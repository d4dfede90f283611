"""``r1core launch plan|torchrun|slurm``: dry-run a layout, or print the command that starts a run.

``plan`` validates a layout against a GPU count and a model, prints the process-group plan
and a memory estimate, and exits non-zero for an impossible layout (2) or one estimated not
to fit in GPU memory (3). ``torchrun`` and ``slurm`` print (or write) the launch command or
sbatch script; given layout flags they validate the layout for the world size first and
pass it on to the run as ``parallel.*`` overrides.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from r1core.launch.commands import SlurmSpec, render_sbatch, torchrun_command
from r1core.parallel.layout import LayoutError, ParallelConfig, check_model_fits, resolve_layout
from r1core.launch.memory import RECOMPUTE_MODES, MemoryInputs, estimate_memory
from r1core.models.hf_config import load_model_shape
from r1core.launch.plan import build_plan, layout_warnings

EXIT_INVALID_LAYOUT = 2
EXIT_OVER_MEMORY = 3

# flag -> ParallelConfig field
_LAYOUT_FLAGS = {
    "tp": "tensor",
    "pp": "pipeline",
    "vpp": "virtual_pipeline",
    "cp": "context",
    "ep": "expert",
    "etp": "expert_tensor",
    "dp": "data",
    "order": "order",
}


def _add_layout_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("parallel layout (Megatron-Core sizes)")
    group.add_argument("--tp", type=int, help="tensor-parallel size")
    group.add_argument("--pp", type=int, help="pipeline-parallel size")
    group.add_argument("--vpp", type=int, help="virtual pipeline stages per rank (interleaved)")
    group.add_argument("--cp", type=int, help="context-parallel size")
    group.add_argument("--ep", type=int, help="expert-parallel size")
    group.add_argument("--etp", type=int, help="expert tensor-parallel size (default: --tp)")
    group.add_argument("--dp", type=int, help="data-parallel size (default: derived)")
    group.add_argument("--order", help="rank order, fastest first (default tp-cp-ep-dp-pp)")
    group.add_argument("--sequence-parallel", action="store_true", default=None)
    group.add_argument(
        "--no-distributed-optimizer", dest="distributed_optimizer", action="store_false", default=None
    )


def _layout_config(args: argparse.Namespace) -> tuple[ParallelConfig, list[str]]:
    """ParallelConfig from ``--config`` (if given) and the flags, and the ``parallel.*``
    overrides for the flags given (flags win over the file)."""
    config = ParallelConfig()
    if getattr(args, "config", None):
        from r1core.config import RunConfig, load_config

        config = load_config(RunConfig, args.config).parallel
    overrides = []
    for flag, name in _LAYOUT_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(config, name, value)
            overrides.append(f"parallel.{name}={value}")
    for name in ("sequence_parallel", "distributed_optimizer"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
            overrides.append(f"parallel.{name}={str(value).lower()}")
    return config, overrides


def _split_run_args(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    argv = list(argv)
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1 :]
    return argv, None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1core launch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)

    plan = sub.add_parser("plan", help="validate a layout; print process groups and memory (no GPU)")
    plan.add_argument("--gpus", type=int, required=True, help="total GPUs (world size)")
    plan.add_argument("--gpus-per-node", type=int, default=8)
    plan.add_argument("--model", help="preset name, Hugging Face config.json, or its folder")
    plan.add_argument("--config", metavar="YAML", help="take the layout from a run config's parallel section")
    plan.add_argument("--micro-batch-size", type=int, default=1)
    plan.add_argument("--seq-length", type=int, default=4096)
    plan.add_argument("--num-microbatches", type=int, default=8)
    plan.add_argument("--recompute", choices=RECOMPUTE_MODES, default="selective")
    plan.add_argument("--gpu-memory-gib", type=float, default=80.0)
    plan.add_argument("--overhead-gib", type=float, default=3.0)
    plan.add_argument("--rollout-tp", type=int, default=0, help="colocated vLLM TP size (0: skip)")
    plan.add_argument("--gpu-memory-utilization", type=float, default=0.6)
    plan.add_argument(
        "--no-offload", dest="offload", action="store_false", help="trainer stays on GPU during rollout"
    )
    plan.add_argument("--max-groups", type=int, default=4, help="groups shown per kind")
    plan.add_argument(
        "--allow-over-memory", action="store_true", help="exit 0 even if the estimate exceeds memory"
    )
    _add_layout_flags(plan)

    torchrun = sub.add_parser("torchrun", help="print the single-node torchrun command")
    torchrun.add_argument("--nproc-per-node", type=int, default=8)
    _add_layout_flags(torchrun)

    slurm = sub.add_parser("slurm", help="print or write an sbatch script")
    slurm.add_argument("--nodes", type=int, default=2)
    slurm.add_argument("--gpus-per-node", type=int, default=8)
    slurm.add_argument("--job-name", default="r1core")
    slurm.add_argument("--time", default="24:00:00")
    slurm.add_argument("--cpus-per-task", type=int, default=0)
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--rdzv-port", type=int, default=29500)
    slurm.add_argument("--exclusive", action="store_true",
                       help="ask for whole nodes (the script still starts --gpus-per-node workers per node)")
    slurm.add_argument("--stop-warning", type=int, default=300, metavar="SECONDS",
                       help="SLURM sends SIGUSR1 this long before the time limit: the run checkpoints and exits "
                            "with 75 (0: no warning)")
    slurm.add_argument("--log", default="%x-%j.out",
                       help="the job's log, relative to the submission folder (default %(default)s)")
    slurm.add_argument("--output", help="write the script here instead of printing it")
    _add_layout_flags(slurm)
    parser.epilog = "torchrun/slurm: put the r1core subcommand after '--', e.g. -- train --config run.yaml"
    return parser


def _plan(args: argparse.Namespace) -> int:
    from r1core.config import ConfigError

    try:
        config, _ = _layout_config(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID_LAYOUT
    try:
        layout = resolve_layout(config, args.gpus)
        if args.config:
            from r1core.config import RunConfig, load_config

            load_config(RunConfig, args.config).check_batch_split(layout.data)
        model = load_model_shape(args.model) if args.model else None
        notes = check_model_fits(layout, model, args.seq_length) if model else []
    except (LayoutError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID_LAYOUT
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID_LAYOUT
    plan = build_plan(layout, args.gpus_per_node)
    print(f"layout: {layout.describe()}")
    print(plan.format(max_groups=args.max_groups))
    for warning in layout_warnings(plan):
        print(f"warning: {warning}")
    for note in notes:
        print(f"note: {note}")
    if model is None:
        print("memory: give --model to estimate per-GPU memory")
        return 0
    print(
        f"model: {model.name}: {model.total_params() / 1e9:.2f} B parameters "
        f"({model.active_params() / 1e9:.2f} B active), {model.num_layers} layers"
    )
    inputs = MemoryInputs(
        micro_batch_size=args.micro_batch_size,
        sequence_length=args.seq_length,
        num_microbatches=args.num_microbatches,
        recompute=args.recompute,
        gpu_memory_gib=args.gpu_memory_gib,
        overhead_gib=args.overhead_gib,
        rollout_tensor=args.rollout_tp,
        gpu_memory_utilization=args.gpu_memory_utilization,
        offload_trainer_during_rollout=args.offload,
    )
    estimate = estimate_memory(layout, model, inputs)
    print(estimate.format())
    problem = None if estimate.fits else "the training estimate exceeds GPU memory"
    problem = problem or estimate.rollout_problem()
    if problem and not args.allow_over_memory:
        print(f"error: {problem} (use --allow-over-memory to accept)", file=sys.stderr)
        return EXIT_OVER_MEMORY
    return 0


def _validated_overrides(args: argparse.Namespace, world_size: int) -> list[str] | None:
    config, overrides = _layout_config(args)
    try:
        resolve_layout(config, world_size)
    except LayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``r1core launch``; returns the process exit status."""
    own, run_args = _split_run_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    if args.action == "plan":
        if run_args is not None:
            print("error: 'plan' takes no run arguments after '--'", file=sys.stderr)
            return EXIT_INVALID_LAYOUT
        return _plan(args)
    if args.action == "torchrun":
        overrides = _validated_overrides(args, args.nproc_per_node)
        if overrides is None:
            return EXIT_INVALID_LAYOUT
        if not run_args:
            print(
                "error: give the r1core subcommand after '--', e.g. -- train --config run.yaml",
                file=sys.stderr,
            )
            return EXIT_INVALID_LAYOUT
        print(shlex.join(torchrun_command(args.nproc_per_node, [*run_args, *overrides])))
        return 0
    overrides = _validated_overrides(args, args.nodes * args.gpus_per_node)
    if overrides is None:
        return EXIT_INVALID_LAYOUT
    if run_args is None and overrides:
        print("error: layout flags need the run's arguments after '--' to be passed on", file=sys.stderr)
        return EXIT_INVALID_LAYOUT
    spec = SlurmSpec(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        job_name=args.job_name,
        time=args.time,
        cpus_per_task=args.cpus_per_task,
        partition=args.partition,
        account=args.account,
        rdzv_port=args.rdzv_port,
        exclusive=args.exclusive,
        stop_warning_s=args.stop_warning,
        output=args.log,
        args=None if run_args is None else [*run_args, *overrides],
    )
    script = render_sbatch(spec)
    # SLURM opens the log before the script runs: its folder must exist at submission.
    log_folder = Path(args.log).parent
    if str(log_folder) not in ("", ".") and "%" not in str(log_folder):
        log_folder.mkdir(parents=True, exist_ok=True)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(script)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(script)
    return 0
