"""Process groups: the default group and Megatron-Core's model-parallel groups.

Everything here needs megatron-core (the ``policy`` extra) except
:func:`world_size_and_rank`; the layout rules themselves are in :mod:`r1core.parallel.layout`
and run before any group is created.
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist

from r1core.parallel.layout import LayoutError, ParallelConfig, ParallelLayout, resolve_layout


def world_size_and_rank() -> tuple[int, int]:
    """World size and rank of the default group, or from torchrun's environment variables
    when the group does not exist yet (1, 0 outside a launcher)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def init_distributed(parallel: ParallelConfig, *, seed: int = 1234) -> ParallelLayout:
    """Create the default process group if needed, then Megatron's model-parallel groups.

    Single-process runs get a one-rank gloo group through a file store, so the same code path
    (and Megatron's collectives, which become no-ops) is used everywhere. Megatron's groups are
    rebuilt when they exist with another layout. Returns the resolved layout.

    Raises:
        LayoutError: the layout does not fit the world size (before any group is created).
    """
    world_size, rank = world_size_and_rank()
    layout = resolve_layout(parallel, world_size)
    parallel_state = _megatron().parallel_state
    if not dist.is_initialized():
        backend = parallel.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend=backend, world_size=world_size, rank=rank)
        else:
            if world_size != 1:
                raise LayoutError([f"WORLD_SIZE={world_size} but MASTER_ADDR is unset: start with torchrun"])
            store = tempfile.NamedTemporaryFile(prefix="r1core_pg_", delete=False).name
            dist.init_process_group(backend=backend, init_method=f"file://{store}", world_size=1, rank=0)
    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count())))
    if parallel_state.model_parallel_is_initialized():
        current = (
            parallel_state.get_tensor_model_parallel_world_size(),
            parallel_state.get_pipeline_model_parallel_world_size(),
            parallel_state.get_expert_model_parallel_world_size(),
        )
        if current == (layout.tensor, layout.pipeline, layout.expert):
            return layout
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tensor,
        pipeline_model_parallel_size=layout.pipeline,
        expert_model_parallel_size=layout.expert,
        expert_tensor_parallel_size=layout.expert_tensor,
    )
    seed_everything(seed)
    return layout


def seed_everything(seed: int) -> None:
    """Seed torch. On CUDA also Megatron's tensor-parallel RNG tracker; on CPU that function
    raises, and nothing in the policy draws from it (dropout is off, weights come from disk)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(seed)


def destroy_distributed() -> None:
    """Tear down Megatron's groups and the default process group (for tests and scripts)."""
    core = _megatron()
    if core.parallel_state.model_parallel_is_initialized():
        core.parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def _megatron():
    from r1core._extras import require

    return require("megatron.core", extra="policy", feature="r1core.models")
