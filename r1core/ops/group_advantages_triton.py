"""Triton backend of ``group_advantages``: registered custom ops and the backend object.

Reading order: registered ops (``r1core::group_advantages_fixed_triton`` for equal
contiguous groups, one launch; ``r1core::group_advantages_triton`` for ragged dense ids),
their fake (meta) implementations, the backend object the public function dispatches to.
Kernels are in ``kernels/group_advantages.py``. The ops have no autograd: advantages are computed
from rewards, which carry no gradient.
"""

from __future__ import annotations

import torch
import triton

from r1core.kernels import group_advantages as kernels
from r1core.ops import _backend
from r1core.ops.group_advantages import MODES, GroupAdvantages


def _check_mode(mode: str) -> int:
    if mode not in kernels.MODE_IDS:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    return kernels.MODE_IDS[mode]


@torch.library.custom_op("r1core::group_advantages_fixed_triton", mutates_args=())
def group_advantages_fixed_triton(
    rewards: torch.Tensor, group_size: int, mode: str, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal contiguous groups: ``rewards`` float ``[B]`` with ``B % group_size == 0``.
    Returns float32 advantages ``[B]`` and bool zero-variance flags ``[B]``."""
    mode_id = _check_mode(mode)
    if group_size < 1 or rewards.shape[0] % group_size != 0:
        raise ValueError(f"group_size={group_size} does not divide the batch of {rewards.shape[0]} rewards")
    rewards = rewards.contiguous()
    num_samples = rewards.shape[0]
    config = kernels.fixed_launch_config(num_samples // group_size, group_size)
    if config is None:  # groups too large for one program's registers
        group_ids = torch.arange(num_samples, device=rewards.device) // group_size
        return group_advantages_triton(rewards, group_ids, mode, eps)
    advantages = torch.empty(num_samples, dtype=torch.float32, device=rewards.device)
    zero_variance = torch.empty(num_samples, dtype=torch.bool, device=rewards.device)
    if num_samples == 0:
        return advantages, zero_variance
    programs, groups, block_size, num_warps = config
    kernels.fixed_group_advantages_kernel[(programs,)](
        rewards, advantages, zero_variance, num_samples // group_size, group_size, eps,
        MODE=mode_id, GROUPS=groups, BLOCK_SIZE=block_size, num_warps=num_warps,
    )
    return advantages, zero_variance


@group_advantages_fixed_triton.register_fake
def _(rewards, group_size, mode, eps):
    return rewards.new_empty(rewards.shape, dtype=torch.float32), rewards.new_empty(rewards.shape, dtype=torch.bool)


@torch.library.custom_op("r1core::group_advantages_triton", mutates_args=())
def group_advantages_triton(
    rewards: torch.Tensor, group_ids: torch.Tensor, mode: str, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged groups: ``rewards`` float ``[B]``, ``group_ids`` int ``[B]`` dense in ``[0, B)``.
    Returns float32 advantages ``[B]`` and bool zero-variance flags ``[B]``.

    Launches: one memset of a float32 ``[4, B]`` workspace and three kernels (see
    ``kernels/group_advantages.py``); no host synchronisation.
    """
    mode_id = _check_mode(mode)
    if group_ids.shape != rewards.shape:
        raise ValueError(f"group_ids shape {tuple(group_ids.shape)} != rewards shape {tuple(rewards.shape)}")
    rewards, group_ids = rewards.contiguous(), group_ids.contiguous()
    num_samples = rewards.shape[0]
    advantages = torch.empty(num_samples, dtype=torch.float32, device=rewards.device)
    zero_variance = torch.empty(num_samples, dtype=torch.bool, device=rewards.device)
    if num_samples == 0:
        return advantages, zero_variance
    workspace = torch.zeros(4, num_samples, dtype=torch.float32, device=rewards.device)
    pivot = torch.empty_like(rewards)  # every used slot is written by pass 1
    block = kernels.RAGGED_BLOCK
    grid = (triton.cdiv(num_samples, block),)
    kernels.ragged_sums_kernel[grid](rewards, group_ids, workspace, pivot, num_samples, BLOCK=block)
    kernels.ragged_deviations_kernel[grid](rewards, group_ids, workspace, pivot, num_samples, BLOCK=block)
    kernels.ragged_finish_kernel[grid](
        rewards, group_ids, workspace, advantages, zero_variance, num_samples, eps, MODE=mode_id, BLOCK=block
    )
    return advantages, zero_variance


@group_advantages_triton.register_fake
def _(rewards, group_ids, mode, eps):
    return rewards.new_empty(rewards.shape, dtype=torch.float32), rewards.new_empty(rewards.shape, dtype=torch.bool)


class TritonGroupAdvantages:
    """Backend object of ``group_advantages``: called with the ragged signature of
    :func:`r1core.ops.group_advantages.group_advantages_reference`; ``fixed_size`` serves equal
    contiguous groups in one launch."""

    def __call__(self, rewards: torch.Tensor, group_ids: torch.Tensor, mode: str, eps: float) -> GroupAdvantages:
        return GroupAdvantages(*torch.ops.r1core.group_advantages_triton(rewards, group_ids, mode, float(eps)))

    def fixed_size(self, rewards: torch.Tensor, group_size: int, mode: str, eps: float) -> GroupAdvantages:
        return GroupAdvantages(*torch.ops.r1core.group_advantages_fixed_triton(rewards, int(group_size), mode, float(eps)))


_backend.register_impl("group_advantages", "triton", TritonGroupAdvantages())
