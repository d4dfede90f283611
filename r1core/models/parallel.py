"""Parallel layout of the policy: the config, its validation, and Megatron's process groups.

The layout follows Megatron-Core's conventions: ``tensor * pipeline * data == world`` for the
dense part, and ``expert * expert_tensor * expert_data == tensor * data`` for the experts
(see ``megatron.core.parallel_state.initialize_model_parallel``). Every check that can fail
runs in :meth:`ParallelConfig.validate` / :meth:`ParallelConfig.validate_for_model`, before a
process group is created or a weight is read.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


class ParallelLayoutError(ValueError):
    """The requested parallel layout does not fit the world size or the model."""


@dataclass
class ParallelConfig:
    """How the policy is split across processes.

    tensor: tensor-parallel size (attention heads, MLP columns and the vocabulary are split).
    pipeline: pipeline-parallel size (contiguous blocks of layers per stage).
    expert: expert-parallel size (MoE experts split across ranks).
    expert_tensor: tensor-parallel size inside each expert; None means the same as ``tensor``
        (Megatron-Core's default; 1 is the usual choice for fine-grained experts).
    sequence_parallel: split the sequence dimension of the activations outside attention and
        MLP across the tensor-parallel group (needs ``tensor > 1``; Megatron requires it for
        MoE with ``tensor > 1`` in training).
    backend: torch.distributed backend used when this module has to create the default
        process group itself (``None``: ``nccl`` with CUDA, ``gloo`` otherwise).
    """

    tensor: int = 1
    pipeline: int = 1
    expert: int = 1
    expert_tensor: int | None = None
    sequence_parallel: bool = False
    backend: str | None = None

    @property
    def expert_tensor_size(self) -> int:
        return self.tensor if self.expert_tensor is None else self.expert_tensor

    @classmethod
    def coerce(cls, layout: Any) -> "ParallelConfig":
        """A :class:`ParallelConfig` from any object with the same field names (for example the
        launcher's layout config). Fields the policy cannot honour raise a clear error."""
        if isinstance(layout, cls):
            return layout
        for name, unsupported in (("context", 1), ("virtual_pipeline", None)):
            value = getattr(layout, name, unsupported)
            if value not in (unsupported, 0) and not (name == "virtual_pipeline" and value == 1):
                raise ParallelLayoutError(f"the policy does not support {name}={value!r} yet")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: getattr(layout, name) for name in fields if hasattr(layout, name)})

    def data_parallel_size(self, world_size: int) -> int:
        """Number of data-parallel replicas of the dense part for ``world_size`` processes."""
        self.validate(world_size)
        return world_size // (self.tensor * self.pipeline)

    def validate(self, world_size: int) -> None:
        """Raise :class:`ParallelLayoutError` if the layout cannot be built on ``world_size``
        processes. Call before any work is done."""
        for name in ("tensor", "pipeline", "expert", "expert_tensor_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ParallelLayoutError(f"ParallelConfig.{name} must be a positive int, got {value!r}")
        if world_size < 1:
            raise ParallelLayoutError(f"world size must be >= 1, got {world_size}")
        model_parallel = self.tensor * self.pipeline
        if world_size % model_parallel:
            raise ParallelLayoutError(
                f"world size {world_size} is not divisible by tensor ({self.tensor}) x pipeline "
                f"({self.pipeline}) = {model_parallel}"
            )
        per_stage = world_size // self.pipeline
        expert_group = self.expert * self.expert_tensor_size
        if per_stage % expert_group:
            raise ParallelLayoutError(
                f"world size {world_size} / pipeline {self.pipeline} = {per_stage} ranks per stage "
                f"is not divisible by expert ({self.expert}) x expert_tensor "
                f"({self.expert_tensor_size}) = {expert_group}"
            )
        if self.sequence_parallel and self.tensor == 1:
            raise ParallelLayoutError("sequence_parallel=True needs tensor > 1")

    def validate_for_model(self, spec: Any) -> None:
        """Check the layout against a model's shape. ``spec`` is a
        :class:`r1core.models.config.ModelSpec` (anything with its fields works)."""
        checks = [
            (spec.num_attention_heads, self.tensor, "num_attention_heads", "tensor"),
            (spec.num_query_groups, self.tensor, "num_key_value_heads", "tensor"),
            (spec.num_layers, self.pipeline, "num_hidden_layers", "pipeline"),
        ]
        if spec.ffn_hidden_size is not None:
            checks.append((spec.ffn_hidden_size, self.tensor, "intermediate_size", "tensor"))
        if spec.num_experts:
            checks.append((spec.num_experts, self.expert, "num_experts", "expert"))
            checks.append(
                (spec.moe_ffn_hidden_size, self.expert_tensor_size, "moe_intermediate_size",
                 "expert_tensor")
            )
        elif self.expert > 1:
            raise ParallelLayoutError(
                f"expert={self.expert} was asked for, but the model {spec.model_type!r} has no experts"
            )
        for count, size, what, field in checks:
            if count % size:
                raise ParallelLayoutError(
                    f"the model's {what} = {count} is not divisible by ParallelConfig.{field} = {size}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def world_size_and_rank() -> tuple[int, int]:
    """World size and rank of the default group, or from torchrun's environment variables
    when the group does not exist yet (1, 0 outside a launcher)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def init_distributed(parallel: ParallelConfig, *, seed: int = 1234) -> None:
    """Create the default process group if needed, then Megatron's model-parallel groups.

    Single-process runs get a one-rank gloo group through a file store, so the same code path
    (and Megatron's collectives, which become no-ops) is used everywhere. Megatron's groups are
    rebuilt when they exist with another layout.
    """
    core = _megatron()
    parallel_state = core.parallel_state
    world_size, rank = world_size_and_rank()
    parallel.validate(world_size)
    if not dist.is_initialized():
        backend = parallel.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend=backend, world_size=world_size, rank=rank)
        else:
            if world_size != 1:
                raise ParallelLayoutError(
                    f"WORLD_SIZE={world_size} but MASTER_ADDR is unset: start with torchrun"
                )
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
        if current == (parallel.tensor, parallel.pipeline, parallel.expert):
            return
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tensor,
        pipeline_model_parallel_size=parallel.pipeline,
        expert_model_parallel_size=parallel.expert,
        expert_tensor_parallel_size=parallel.expert_tensor_size,
    )
    seed_everything(seed)


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
