"""Launching runs: parallel layouts, process-group plans, memory estimates, launch commands.

Everything here is pure Python and needs no GPU: ``r1core launch plan`` validates a layout
for a cluster before any job is queued. The shell scripts live in the repository's
top-level ``launch/`` folder.
"""

from r1core.launch.commands import SlurmSpec, render_sbatch, torchrun_command
from r1core.parallel.layout import (
    LayoutError,
    ParallelConfig,
    ParallelLayout,
    check_model_fits,
    padded_vocab_size,
    resolve_layout,
)
from r1core.launch.memory import MemoryEstimate, MemoryInputs, estimate_memory
from r1core.models.hf_config import from_hf_config, load_model_shape
from r1core.models.shape import ModelShape
from r1core.launch.plan import ProcessGroupPlan, build_plan, rank_groups

__all__ = [
    "LayoutError",
    "MemoryEstimate",
    "MemoryInputs",
    "ModelShape",
    "ParallelConfig",
    "ParallelLayout",
    "ProcessGroupPlan",
    "SlurmSpec",
    "build_plan",
    "check_model_fits",
    "estimate_memory",
    "from_hf_config",
    "load_model_shape",
    "padded_vocab_size",
    "rank_groups",
    "render_sbatch",
    "resolve_layout",
    "torchrun_command",
]
