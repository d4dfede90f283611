"""MoE layer for the policy: Megatron's ``MoELayer`` with a token dispatcher that runs on CPU.

On CUDA the layer is Megatron's, unchanged (all-to-all dispatcher). Without CUDA, Megatron's
dispatchers cannot run: the all-to-all one creates a CUDA stream when it is built, and the
all-gather one allocates its communication buffers with ``torch.cuda.current_device()``.
:class:`CollectiveAllGatherDispatcher` keeps the all-gather dispatcher's token permutation
(Megatron's ``permute``/``unpermute``) and replaces only its two collectives with autograd
functions over plain ``torch.distributed`` calls that any backend (gloo included) provides:
all-gather for dispatch, all-reduce + slice for combine (gloo has no reduce-scatter).

:class:`PolicyMoELayer` is plugged in through the layer spec (the MoE module slot); it is a
subclass, Megatron's code is not patched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from r1core._extras import require

require("megatron.core", extra="policy", feature="r1core.models")

from megatron.core.transformer.moe.moe_layer import MoELayer  # noqa: E402
from megatron.core.transformer.moe.moe_utils import get_default_pg_collection  # noqa: E402
from megatron.core.transformer.moe.token_dispatcher import MoEAllGatherTokenDispatcher  # noqa: E402


def _gather_rows(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def _reduce_scatter_rows(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    # all-reduce then keep this rank's rows: the same result as reduce-scatter, on any backend.
    x = x.contiguous().clone()
    dist.all_reduce(x, group=group)
    return x.chunk(dist.get_world_size(group), dim=0)[dist.get_rank(group)].contiguous()


class _AllGatherRows(torch.autograd.Function):
    """``[n, ...]`` on each rank -> ``[n * world, ...]``; backward reduce-scatters."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return _gather_rows(x, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _reduce_scatter_rows(grad, ctx.group), None


class _ReduceScatterRows(torch.autograd.Function):
    """Sum over ranks, keep this rank's ``1/world`` of the rows; backward all-gathers."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return _reduce_scatter_rows(x, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _gather_rows(grad.contiguous(), ctx.group), None


class CollectiveAllGatherDispatcher(MoEAllGatherTokenDispatcher):
    """Megatron's all-gather dispatcher with backend-neutral collectives (see module doc)."""

    def token_dispatch(self, hidden_states: torch.Tensor, probs: torch.Tensor):
        if self.tp_size > 1 or self.ep_size > 1:
            group = self.tp_ep_group
            with torch.no_grad():
                self.routing_map = _gather_rows(self.routing_map, group)
            probs = _AllGatherRows.apply(probs, group)
            hidden_states = _AllGatherRows.apply(hidden_states, group)
        return hidden_states, probs

    def token_combine(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.tp_size > 1 or self.ep_size > 1:
            dtype = hidden_states.dtype
            hidden_states = _ReduceScatterRows.apply(
                hidden_states.to(self.local_probs.dtype), self.tp_ep_group
            ).to(dtype)
        return hidden_states


class PolicyMoELayer(MoELayer):
    """Megatron's ``MoELayer``; without CUDA its all-gather dispatcher is swapped for
    :class:`CollectiveAllGatherDispatcher` right after construction."""

    def __init__(self, config: Any, submodules: Any = None, layer_number: int | None = None,
                 pg_collection: Any = None) -> None:
        if pg_collection is None:
            pg_collection = get_default_pg_collection()
        super().__init__(config=config, submodules=submodules, layer_number=layer_number,
                         pg_collection=pg_collection)
        if isinstance(self.token_dispatcher, MoEAllGatherTokenDispatcher) and not torch.cuda.is_available():
            self.token_dispatcher = CollectiveAllGatherDispatcher(
                self.num_local_experts,
                self.local_expert_indices,
                config=self.config,
                pg_collection=pg_collection,
            )
