"""Triton kernels of group-relative advantages (GRPO, Dr. GRPO, RLOO).

Two paths, both exact two-pass statistics in float32:

* Equal contiguous groups (``group_size``): ONE launch. Each program holds a 2-D tile
  ``[GROUPS, BLOCK_SIZE]`` (groups x group size padded to a power of two) in registers,
  computes mean, unbiased std, min and max of each row, and writes the advantages and the
  zero-variance flag. The op is launch-bound at RL batch sizes (8192 rewards = 32 KiB), so
  the tile is sized to give a few dozen programs, not to saturate bandwidth.

* Ragged groups (dense ids in ``[0, B)``): one memset and three launches over the samples.
  Pass 1 adds count and sum per group with float32 atomics and stores one member's reward
  per group as the group's pivot; pass 2 adds the squared deviations from the group mean
  (two-pass, so no catastrophic cancellation of sum(x^2) - n*mean^2) and counts members that
  differ from the pivot; pass 3 writes the advantages. A group is zero-variance exactly when
  no member differs from the pivot, which is the same test as ``max == min`` of the
  reference, with no float rounding involved. The atomics make the float sums' summation
  order run-dependent (last-bit differences between runs); the zero-variance flags are exact.

NaN rewards: the kernel that first reads the rewards (the fixed-size kernel, or pass 1 of the
ragged path) holds a device assertion on them, compiled in by ``debug=True`` on those two
kernels, so that the public function needs no extra launches and no host synchronisation to
refuse NaN on CUDA (the next synchronising call raises "device-side assert triggered"). The
CPU interpreter skips device assertions; the public function checks CPU rewards on the host.

Modes (constexpr ``MODE``): 0 grpo, 1 drgrpo, 2 rloo, 3 none (see r1core/ops/group_advantages.py).
"""

from __future__ import annotations

import triton
import triton.language as tl

MODE_IDS = {"grpo": 0, "drgrpo": 1, "rloo": 2, "none": 3}

# Elements per program of the fixed-size kernel, and the largest padded group one program
# holds; larger groups go through the ragged path.
FIXED_TILE = 1024
MAX_FIXED_BLOCK = 8192
RAGGED_BLOCK = 1024


@triton.jit
def _finish(r, centred, count, std, zero_variance, eps, MODE: tl.constexpr):
    """Advantage of each element from its group's statistics (shared by both paths)."""
    if MODE == 0:
        # Flat groups are zeroed below; a unit divisor keeps them from computing 0 / 0.
        advantages = centred / tl.where(zero_variance, 1.0, std + eps)
    elif MODE == 1:
        advantages = centred
    elif MODE == 2:
        # r_i - mean of the others = n / (n - 1) * (r_i - mean), same operation order as the
        # reference so both round alike.
        advantages = centred * count / tl.maximum(count - 1.0, 1.0)
    else:
        advantages = r
    if MODE != 3:
        # A singleton group is always zero-variance (its max equals its min), so this also
        # zeroes singletons, as the reference does.
        advantages = tl.where(zero_variance, 0.0, advantages)
    return advantages


@triton.jit(debug=True)
def fixed_group_advantages_kernel(
    rewards_ptr,
    advantages_ptr,
    zero_variance_ptr,
    num_groups,
    group_size,
    eps,
    MODE: tl.constexpr,
    GROUPS: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """Programs: ``cdiv(num_groups, GROUPS)``; each owns ``GROUPS`` whole groups."""
    groups = tl.program_id(0) * GROUPS + tl.arange(0, GROUPS)
    members = tl.arange(0, BLOCK_SIZE)
    valid = (groups < num_groups)[:, None] & (members < group_size)[None, :]
    offsets = groups.to(tl.int64)[:, None] * group_size + members[None, :]
    raw = tl.load(rewards_ptr + offsets, mask=valid, other=0.0)
    tl.device_assert(raw == raw, "r1core.ops.group_advantages: rewards contain NaN")
    # Equality is decided on the rewards as given (float64 rewards that differ below float32
    # resolution are still a non-zero-variance group, as in the reference).
    group_max = tl.max(tl.where(valid, raw, float("-inf")), axis=1)
    group_min = tl.min(tl.where(valid, raw, float("inf")), axis=1)
    zero_variance = group_max == group_min
    r = raw.to(tl.float32)
    count = group_size.to(tl.float32)
    mean = tl.sum(r, axis=1) / count
    centred = tl.where(valid, r - mean[:, None], 0.0)
    std = tl.sqrt(tl.sum(centred * centred, axis=1) / tl.maximum(count - 1.0, 1.0))
    advantages = _finish(r, centred, count, std[:, None], zero_variance[:, None], eps, MODE)
    tl.store(advantages_ptr + offsets, advantages, mask=valid)
    flags = tl.broadcast_to(zero_variance[:, None], (GROUPS, BLOCK_SIZE))
    tl.store(zero_variance_ptr + offsets, flags, mask=valid)


@triton.jit(debug=True)
def ragged_sums_kernel(rewards_ptr, group_ids_ptr, workspace_ptr, pivot_ptr, num_samples, BLOCK: tl.constexpr):
    """Pass 1. ``workspace`` float32 ``[4, B]`` zeroed: rows count, sum, sq_dev, mismatches."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offsets < num_samples
    raw = tl.load(rewards_ptr + offsets, mask=valid, other=0.0)
    tl.device_assert(raw == raw, "r1core.ops.group_advantages: rewards contain NaN")
    group = tl.load(group_ids_ptr + offsets, mask=valid, other=0)
    tl.atomic_add(workspace_ptr + group, 1.0, mask=valid, sem="relaxed")
    tl.atomic_add(workspace_ptr + num_samples + group, raw.to(tl.float32), mask=valid, sem="relaxed")
    # Racing plain stores of whole words: the pivot ends up equal to one member's reward,
    # which is all pass 2 needs.
    tl.store(pivot_ptr + group, raw, mask=valid)


@triton.jit
def ragged_deviations_kernel(rewards_ptr, group_ids_ptr, workspace_ptr, pivot_ptr, num_samples, BLOCK: tl.constexpr):
    """Pass 2: squared deviations from the group mean, and members unequal to the pivot."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offsets < num_samples
    raw = tl.load(rewards_ptr + offsets, mask=valid, other=0.0)
    group = tl.load(group_ids_ptr + offsets, mask=valid, other=0)
    count = tl.load(workspace_ptr + group, mask=valid, other=1.0)
    total = tl.load(workspace_ptr + num_samples + group, mask=valid, other=0.0)
    pivot = tl.load(pivot_ptr + group, mask=valid, other=0.0)
    centred = raw.to(tl.float32) - total / tl.maximum(count, 1.0)
    tl.atomic_add(workspace_ptr + 2 * num_samples + group, centred * centred, mask=valid, sem="relaxed")
    differs = valid & (raw != pivot)
    tl.atomic_add(workspace_ptr + 3 * num_samples + group, 1.0, mask=differs, sem="relaxed")


@triton.jit
def ragged_finish_kernel(
    rewards_ptr,
    group_ids_ptr,
    workspace_ptr,
    advantages_ptr,
    zero_variance_ptr,
    num_samples,
    eps,
    MODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Pass 3: advantages and zero-variance flags per sample."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offsets < num_samples
    r = tl.load(rewards_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    group = tl.load(group_ids_ptr + offsets, mask=valid, other=0)
    count = tl.load(workspace_ptr + group, mask=valid, other=1.0)
    total = tl.load(workspace_ptr + num_samples + group, mask=valid, other=0.0)
    sq_dev = tl.load(workspace_ptr + 2 * num_samples + group, mask=valid, other=0.0)
    mismatches = tl.load(workspace_ptr + 3 * num_samples + group, mask=valid, other=0.0)
    centred = r - total / tl.maximum(count, 1.0)
    std = tl.sqrt(sq_dev / tl.maximum(count - 1.0, 1.0))
    zero_variance = mismatches == 0.0
    advantages = _finish(r, centred, count, std, zero_variance, eps, MODE)
    tl.store(advantages_ptr + offsets, advantages, mask=valid)
    tl.store(zero_variance_ptr + offsets, zero_variance, mask=valid)


def fixed_launch_config(num_groups: int, group_size: int) -> tuple[int, int, int, int] | None:
    """``(programs, GROUPS, BLOCK_SIZE, num_warps)`` of the fixed-size kernel, or None when a
    padded group exceeds :data:`MAX_FIXED_BLOCK` (use the ragged path)."""
    block_size = triton.next_power_of_2(max(group_size, 1))
    if block_size > MAX_FIXED_BLOCK:
        return None
    groups = max(1, min(FIXED_TILE // block_size, triton.next_power_of_2(max(num_groups, 1))))
    num_warps = 4 if groups * block_size <= 2048 else 8
    return triton.cdiv(num_groups, groups), groups, block_size, num_warps
