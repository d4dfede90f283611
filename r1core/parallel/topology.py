"""Where a trainer rank sits, and the few collectives the RL loop needs beyond the policy's.

Placement follows the usual RL layout (verl, NeMo-RL): the ``world`` is split into
data-parallel replicas of the policy, each replica a model-parallel group (tensor x
pipeline ranks). Every replica owns one rollout engine, driven by its *leader* (the
model-parallel rank 0); the leader generates for the replica's share of the prompts, scores
the rewards, and broadcasts the samples to the other ranks of its group, which all train on
the same batch (tensor parallelism splits the model, not the data).

Data sharding is by whole GRPO groups: every rank draws the same global batch from the
prompt stream (same seed, same position), and data-parallel rank ``d`` keeps its contiguous
``prompts_per_step / dp`` share, so group-normalised advantages stay local and the stream
position is the same on every rank (one checkpointed data position for all). Dynamic
sampling, which drops groups unevenly, pools the kept groups of all replicas and re-splits
them evenly (``GRPOTrainer._rebalance``).

Under pipeline parallelism only the last stage computes the loss and the metrics made
with it (clip fractions, entropy, log-prob mismatch); the trainer averages them there and
broadcasts the floats over the pipeline group once per step
(:meth:`Topology.broadcast_from_last_stage`), then every rank takes its replica leader's
step metrics, so the metrics reduced over the replicas are the same on every rank.

Without an initialised process group everything here degrades to one rank of one replica,
and the collectives are no-ops: the single-process trainer runs the same code.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from r1core.parallel.layout import check_divisible

T = TypeVar("T")

#: Variables torchrun (and SLURM wrappers around it) set for a worker. A rollout engine
#: spawned from a worker must not see them: vLLM reads ``RANK``/``LOCAL_RANK``/``MASTER_*``
#: when it sets up its own one-process group, and would join (or collide with) the trainer's.
TORCHRUN_ENV = (
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
    "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
    "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_ERROR_FILE", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
)


@dataclass
class Topology:
    """This rank's place in the trainer.

    world_rank / world_size: in the default process group.
    dp_rank / dp_size: data-parallel replica of the policy (``world / (tensor x pipeline)``).
    mp_rank / mp_size: rank inside the replica's model-parallel (tensor x pipeline) group;
        rank 0 is the replica's leader, which owns the rollout engine and the reward pool.
    pipeline / pp_rank: pipeline-parallel size and this rank's stage; the loss and the
        metrics computed from it exist on the last stage only.
    dp_group / mp_group / pp_group: the process groups (None in a single process).
    """

    world_rank: int = 0
    world_size: int = 1
    dp_rank: int = 0
    dp_size: int = 1
    mp_rank: int = 0
    mp_size: int = 1
    pipeline: int = 1
    pp_rank: int = 0
    dp_group: Any = None
    mp_group: Any = None
    pp_group: Any = None

    @property
    def is_leader(self) -> bool:
        """Model-parallel rank 0: builds the rollout engine, scores rewards."""
        return self.mp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        """The last pipeline stage: the one that computes the loss."""
        return self.pp_rank == self.pipeline - 1

    @property
    def is_main(self) -> bool:
        """Global rank 0: the only rank that writes logs, summaries, plots, progress."""
        return self.world_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_parallel_state(cls) -> "Topology":
        """Read the layout from Megatron's initialised groups (one rank if there are none)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls()
        from megatron.core import parallel_state as ps

        mp_group = ps.get_model_parallel_group()
        return cls(
            world_rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            dp_rank=ps.get_data_parallel_rank(),
            dp_size=ps.get_data_parallel_world_size(),
            mp_rank=dist.get_rank(mp_group),
            mp_size=dist.get_world_size(mp_group),
            pipeline=ps.get_pipeline_model_parallel_world_size(),
            pp_rank=ps.get_pipeline_model_parallel_rank(),
            dp_group=ps.get_data_parallel_group(),
            mp_group=mp_group,
            pp_group=ps.get_pipeline_model_parallel_group(),
        )

    # ------------------------------------------------------------------ collectives

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_from_leader(self, payload: T | None) -> T:
        """The leader's ``payload`` on every rank of its model-parallel group (one
        ``broadcast_object_list``; a no-op for a group of one)."""
        if self.mp_size == 1:
            return payload  # type: ignore[return-value]
        box = [payload if self.is_leader else None]
        dist.broadcast_object_list(box, src=dist.get_global_rank(self.mp_group, 0), group=self.mp_group)
        return box[0]  # type: ignore[return-value]

    def broadcast_from_last_stage(self, payload: T | None) -> T:
        """The last pipeline stage's ``payload`` on every rank of its pipeline group (one
        ``broadcast_object_list``; a no-op without pipeline parallelism). The other stages
        pass anything (``None``); what they pass is dropped."""
        if self.pipeline == 1:
            return payload  # type: ignore[return-value]
        box = [payload if self.is_last_stage else None]
        source = dist.get_global_rank(self.pp_group, self.pipeline - 1)
        dist.broadcast_object_list(box, src=source, group=self.pp_group)
        return box[0]  # type: ignore[return-value]

    def broadcast_from_main(self, payload: T | None) -> T:
        """Global rank 0's ``payload`` on every rank."""
        if not self.distributed:
            return payload  # type: ignore[return-value]
        box = [payload]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def all_gather(self, item: T) -> list[T]:
        """Every rank's ``item`` (world order), on every rank."""
        if not self.distributed:
            return [item]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, item)
        return out

    def dp_all_gather(self, item: T) -> list[T]:
        """Every data-parallel replica's ``item`` (replica order), on every rank."""
        if self.dp_size == 1:
            return [item]
        out: list[Any] = [None] * self.dp_size
        dist.all_gather_object(out, item, group=self.dp_group)
        return out

    def dp_all_reduce(self, value: float, op: str = "sum") -> float:
        """``value`` reduced over the data-parallel group (``sum``, ``max`` or ``min``)."""
        if self.dp_size == 1:
            return value
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        # NCCL reduces device tensors only; gloo (CPU) host ones.
        device = "cuda" if dist.get_backend(self.dp_group) == "nccl" else "cpu"
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=ops[op], group=self.dp_group)
        return float(tensor.item())


# ---------------------------------------------------------------------- sharding


def shard_slice(total: int, rank: int, size: int) -> slice:
    """The contiguous share of data-parallel ``rank`` among ``size`` of ``total`` items
    (``total`` must be divisible by ``size``)."""
    per_rank = check_divisible(total, size, what="items")
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} outside [0, {size})")
    return slice(rank * per_rank, (rank + 1) * per_rank)


def shard(items: Sequence[T], rank: int, size: int) -> list[T]:
    """``items[shard_slice(len(items), rank, size)]`` as a list."""
    return list(items[shard_slice(len(items), rank, size)])


def even_slices(total: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices covering ``range(total)``, sizes differing by at most one
    (the first ``total % parts`` one larger); empty slices when ``total < parts``."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    base, extra = divmod(total, parts)
    out, start = [], 0
    for index in range(parts):
        stop = start + base + (index < extra)
        out.append(slice(start, stop))
        start = stop
    return out


# ---------------------------------------------------------------------- engine processes


@contextlib.contextmanager
def without_torchrun_env() -> Iterator[None]:
    """Hide torchrun's variables from processes spawned inside the block (a rollout engine),
    and put them back afterwards."""
    saved = {name: os.environ.pop(name) for name in TORCHRUN_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
