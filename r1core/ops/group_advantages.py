"""Group-relative advantages (GRPO, Dr. GRPO, RLOO).

Reading order: reference implementation, public function. Kernels register themselves as
backends of the op ``group_advantages`` (see ``_backend.py``); each takes the same arguments
as :func:`group_advantages_reference` after the public function has validated them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from r1core.ops import _backend

MODES = ("grpo", "drgrpo", "rloo", "none")


class GroupAdvantages(NamedTuple):
    """Result of :func:`group_advantages`.

    advantages: float32 ``[B]``.
    zero_variance: bool ``[B]``, True for every sample whose group's rewards are all equal
        (singleton groups included). Such groups carry no learning signal; dynamic sampling
        drops them.
    """

    advantages: torch.Tensor
    zero_variance: torch.Tensor


def dense_group_index(group_ids: torch.Tensor) -> torch.Tensor:
    """Map arbitrary integer group ids ``[B]`` to dense ids in ``[0, B)`` without a host sync.

    Sorting keeps every shape static (``torch.unique`` would need the number of groups on the
    host first).
    """
    sorted_ids, order = torch.sort(group_ids, stable=True)
    starts = torch.ones_like(sorted_ids, dtype=torch.long)
    starts[1:] = (sorted_ids[1:] != sorted_ids[:-1]).long()
    dense_sorted = torch.cumsum(starts, 0) - 1
    dense = torch.empty_like(dense_sorted)
    dense[order] = dense_sorted
    return dense


def group_advantages_reference(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    mode: str,
    eps: float,
) -> GroupAdvantages:
    """Plain PyTorch specification. ``rewards`` float ``[B]``, ``group_ids`` int64 ``[B]``
    dense in ``[0, B)`` (see :func:`dense_group_index`). Works in float64 when given float64.
    """
    num_samples = rewards.shape[0]
    compute_dtype = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    r = rewards.to(compute_dtype)
    zeros = torch.zeros(num_samples, dtype=compute_dtype, device=r.device)
    count = zeros.index_add(0, group_ids, torch.ones_like(r))
    mean = zeros.index_add(0, group_ids, r) / count.clamp(min=1)
    centred = r - mean[group_ids]
    sq_dev = zeros.index_add(0, group_ids, centred * centred)
    group_count = count[group_ids]
    # Unbiased (n - 1) standard deviation, as in the GRPO paper's implementations.
    std = (sq_dev / (count - 1).clamp(min=1)).sqrt()[group_ids]
    big = torch.full_like(zeros, float("inf"))
    group_max = (-big).scatter_reduce(0, group_ids, r, "amax")
    group_min = big.scatter_reduce(0, group_ids, r, "amin")
    zero_variance = (group_max == group_min)[group_ids]
    singleton = group_count < 2

    if mode == "grpo":
        advantages = centred / (std + eps)
    elif mode == "drgrpo":
        advantages = centred
    elif mode == "rloo":
        # r_i - mean of the others = n / (n - 1) * (r_i - mean of all).
        advantages = centred * group_count / (group_count - 1).clamp(min=1)
    elif mode == "none":
        advantages = r
    else:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if mode != "none":
        advantages = torch.where(singleton | zero_variance, torch.zeros_like(advantages), advantages)
    return GroupAdvantages(advantages, zero_variance)


_backend.register_impl("group_advantages", "reference", group_advantages_reference)


def group_advantages(
    rewards: torch.Tensor,
    *,
    group_size: int | None = None,
    group_ids: torch.Tensor | None = None,
    mode: str = "grpo",
    eps: float = 1e-6,
    backend: str | None = None,
) -> GroupAdvantages:
    """Advantages of each sample relative to its group (the samples of one prompt).

    Args:
        rewards: float ``[B]``. NaN rewards raise ``ValueError`` (checked on the host when
            rewards are on the CPU, where reward functions produce them; on CUDA by a device
            assertion inside the advantage kernel, so no host synchronisation and no extra
            launch happens: the next synchronising call raises).
        group_size: samples per group when groups are contiguous and equal-sized
            (``B % group_size == 0``).
        group_ids: int ``[B]``, any integer id per sample for ragged groups (samples of a
            group need not be contiguous). Give exactly one of ``group_size`` / ``group_ids``.
        mode: ``grpo`` (r - mean) / (std + eps) with the unbiased std; ``drgrpo`` r - mean;
            ``rloo`` r - mean of the other samples of the group; ``none`` r unchanged.
        eps: added to the std in ``grpo`` mode.
        backend: ``None``/``"auto"``, ``"reference"``, ``"triton"``, ``"cpp"`` or ``"cuda"``.

    Returns:
        :class:`GroupAdvantages` (advantages float32 ``[B]`` — float64 for float64 input on
        the reference backend — and zero_variance bool ``[B]``). Samples of zero-variance
        or singleton groups get advantage 0 (except in mode ``none``).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    num_samples = rewards.shape[0]
    if (group_size is None) == (group_ids is None):
        raise ValueError("give exactly one of group_size (equal contiguous groups) or group_ids (ragged)")
    if group_size is not None:
        if group_size < 1 or num_samples % group_size != 0:
            raise ValueError(f"group_size={group_size} does not divide the batch of {num_samples} rewards")
    else:
        if group_ids.shape != rewards.shape:
            raise ValueError(f"group_ids shape {tuple(group_ids.shape)} != rewards shape {tuple(rewards.shape)}")
        if group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
            raise ValueError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    name, impl = _backend.resolve("group_advantages", backend, rewards.device)
    _check_finite(rewards, kernel_checks=name in ("triton", "cuda"))
    if group_size is not None and name != "reference" and hasattr(impl, "fixed_size"):
        return impl.fixed_size(rewards, group_size, mode, eps)
    if group_ids is None:
        group_ids = torch.arange(num_samples, device=rewards.device) // group_size
    else:
        group_ids = dense_group_index(group_ids.to(device=rewards.device, dtype=torch.long))
    return impl(rewards, group_ids, mode, eps)


def _check_finite(rewards: torch.Tensor, kernel_checks: bool) -> None:
    """Refuse NaN rewards. On the CPU on the host (free, and names the index); on CUDA the
    triton and cuda kernels assert it themselves as they read the rewards, so only the
    reference backend needs an asynchronous assertion here (three more launches)."""
    if rewards.device.type == "cpu":
        nan = torch.isnan(rewards)
        if bool(nan.any()):
            index = int(nan.nonzero()[0, 0])
            raise ValueError(f"rewards contain NaN (first at index {index}); a reward function returned NaN")
    elif not kernel_checks:
        torch._assert_async(~torch.isnan(rewards).any(), "r1core.ops.group_advantages: rewards contain NaN")
