"""Triton backend of ``grpo_loss``: registered custom ops for the row statistics and their
backward, wrapped as a :class:`GRPOLossImpl` with the reference primitives' signatures.

Reading order: argument preparation, ``r1core::grpo_row_stats_triton`` and its fake,
``r1core::grpo_row_backward_triton`` and its fake, the backend registration. Kernels are in
``kernels/grpo_loss.py``; autograd and aggregation stay in ``grpo_loss.py`` (shared by every
backend), so these ops need no autograd registration of their own.
"""

from __future__ import annotations

import torch
import triton.language as tl

from r1core.kernels import grpo_loss as kernels
from r1core.ops import _backend
from r1core.ops.grpo_loss import ClipParams, GRPOLossImpl

_LOW_PRECISION = (torch.float16, torch.bfloat16, torch.float32)


def _unit_stride(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Kernels index rows by stride and columns contiguously; copy only when they are not."""
    if tensor is None or tensor.shape[1] <= 1 or tensor.stride(1) == 1:
        return tensor
    return tensor.contiguous()


def _prepare(logp, old_logp, advantages, mask, ref_logp, rollout_logp):
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    for name, tensor in (("old_logp", old_logp), ("advantages", advantages), ("mask", mask),
                         ("ref_logp", ref_logp), ("rollout_logp", rollout_logp)):
        if tensor is not None and tensor.shape != logp.shape:
            raise ValueError(f"{name} must have logp's shape {tuple(logp.shape)}, got {tuple(tensor.shape)}")
        if tensor is not None and tensor.device != logp.device:
            raise ValueError(f"{name} is on {tensor.device}, logp on {logp.device}")
    if logp.dtype not in _LOW_PRECISION + (torch.float64,):
        raise TypeError(f"logp must be a floating tensor, got {logp.dtype}")
    if advantages.stride(1) not in (0, 1) and advantages.shape[1] > 1:
        advantages = advantages.contiguous()
    tensors = [_unit_stride(t) for t in (logp, old_logp, mask, ref_logp, rollout_logp)]
    return tensors[0], tensors[1], advantages, tensors[2], tensors[3], tensors[4]


def _launch_args(logp, old_logp, advantages, mask, ref_logp, rollout_logp, clip_low, clip_high, dual_clip, kl_estimator, is_cap):
    """Pointers, strides, scalars and constexpr flags shared by the two kernels."""
    has_ref, has_is = ref_logp is not None, rollout_logp is not None and is_cap > 0
    block, num_warps = kernels.block_t(logp.shape[1])
    per_row = advantages.shape[1] <= 1 or advantages.stride(1) == 0
    pointers = (logp, old_logp, advantages, mask, ref_logp if has_ref else logp, rollout_logp if has_is else logp)
    strides = (
        logp.stride(0), old_logp.stride(0), advantages.stride(0), 0 if per_row else advantages.stride(1), mask.stride(0),
        ref_logp.stride(0) if has_ref else 0, rollout_logp.stride(0) if has_is else 0,
    )
    # Bounds computed on the host in double and passed as float64; the kernels round them
    # once to the compute type, as torch does with the reference's Python-float scalars.
    scalars = (1.0 - clip_low, 1.0 + clip_high, -dual_clip, is_cap)
    constexprs = dict(
        HAS_REF=has_ref, HAS_IS=has_is, USE_DUAL=dual_clip > 0, ADV_PER_ROW=per_row, KL_ESTIMATOR=kl_estimator,
        COMPUTE=tl.float64 if logp.dtype == torch.float64 else tl.float32, BLOCK_T=block, num_warps=num_warps,
    )
    return pointers, strides, scalars, constexprs


def _stats_dtype(logp: torch.Tensor) -> torch.dtype:
    return torch.float64 if logp.dtype == torch.float64 else torch.float32


@torch.library.custom_op("r1core::grpo_row_stats_triton", mutates_args=())
def grpo_row_stats_triton(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    ref_logp: torch.Tensor | None, rollout_logp: torch.Tensor | None,
    clip_low: float, clip_high: float, dual_clip: float, kl_estimator: int, is_cap: float,
) -> torch.Tensor:
    """Row statistics ``[B, 8]`` (float32; float64 for float64 ``logp``), columns
    ``ROW_STATS``. Inputs ``[B, T]``; ``advantages`` may be expanded from ``[B]``."""
    logp, old_logp, advantages, mask, ref_logp, rollout_logp = _prepare(logp, old_logp, advantages, mask, ref_logp, rollout_logp)
    num_rows, num_cols = logp.shape
    stats = torch.empty(num_rows, 8, dtype=_stats_dtype(logp), device=logp.device)
    if num_rows == 0:
        return stats
    pointers, strides, scalars, constexprs = _launch_args(
        logp, old_logp, advantages, mask, ref_logp, rollout_logp, clip_low, clip_high, dual_clip, kl_estimator, is_cap
    )
    kernels.grpo_row_stats_kernel[(num_rows,)](*pointers, stats, num_cols, *strides, *scalars, **constexprs)
    return stats


@grpo_row_stats_triton.register_fake
def _(logp, old_logp, advantages, mask, ref_logp, rollout_logp, clip_low, clip_high, dual_clip, kl_estimator, is_cap):
    return logp.new_empty(logp.shape[0], 8, dtype=_stats_dtype(logp))


@torch.library.custom_op("r1core::grpo_row_backward_triton", mutates_args=())
def grpo_row_backward_triton(
    grad_pg_rows: torch.Tensor, grad_kl_rows: torch.Tensor,
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    ref_logp: torch.Tensor | None, rollout_logp: torch.Tensor | None,
    clip_low: float, clip_high: float, dual_clip: float, kl_estimator: int, is_cap: float,
) -> torch.Tensor:
    """``d/d logp`` of ``sum_b grad_pg_rows[b] * pg_sum[b] + grad_kl_rows[b] * kl_sum[b]``,
    ``[B, T]`` in ``logp``'s dtype (written directly in that dtype: for bf16 this saves the
    float32 ``[B, T]`` round trip the reference makes; the values are the rounded float32
    gradient, as the reference's gradient after autograd casts it)."""
    logp, old_logp, advantages, mask, ref_logp, rollout_logp = _prepare(logp, old_logp, advantages, mask, ref_logp, rollout_logp)
    num_rows, num_cols = logp.shape
    for name, rows in (("grad_pg_rows", grad_pg_rows), ("grad_kl_rows", grad_kl_rows)):
        if rows.shape != (num_rows,):
            raise ValueError(f"{name} must be [B]={num_rows}, got shape {tuple(rows.shape)}")
    # The kernel rounds to logp's dtype on store (round-to-nearest-even on the GPU). Triton's
    # CPU interpreter truncates float32 -> bfloat16 stores instead, so there the kernel writes
    # float32 and torch rounds.
    store_dtype = logp.dtype if logp.device.type == "cuda" else _stats_dtype(logp)
    grad = torch.empty(num_rows, num_cols, dtype=store_dtype, device=logp.device)
    if grad.numel() == 0:
        return grad.to(logp.dtype)
    pointers, strides, scalars, constexprs = _launch_args(
        logp, old_logp, advantages, mask, ref_logp, rollout_logp, clip_low, clip_high, dual_clip, kl_estimator, is_cap
    )
    kernels.grpo_row_backward_kernel[(num_rows,)](
        grad_pg_rows.contiguous(), grad_kl_rows.contiguous(), *pointers, grad, num_cols, *strides, grad.stride(0),
        *scalars, **constexprs,
    )
    return grad.to(logp.dtype)


@grpo_row_backward_triton.register_fake
def _(grad_pg_rows, grad_kl_rows, logp, old_logp, advantages, mask, ref_logp, rollout_logp, clip_low, clip_high, dual_clip, kl_estimator, is_cap):
    return torch.empty_like(logp, memory_format=torch.contiguous_format)


def row_stats(logp, old_logp, advantages, mask, ref_logp, rollout_logp, params: ClipParams) -> torch.Tensor:
    """:func:`r1core.ops.grpo_loss.grpo_row_stats_reference`'s signature, on the kernel."""
    return torch.ops.r1core.grpo_row_stats_triton(
        logp, old_logp, advantages, mask, ref_logp, rollout_logp,
        params.clip_low, params.clip_high, params.dual_clip, params.kl_estimator, params.is_cap,
    )


def row_backward(grad_pg_rows, grad_kl_rows, logp, old_logp, advantages, mask, ref_logp, rollout_logp, params: ClipParams) -> torch.Tensor:
    """:func:`r1core.ops.grpo_loss.grpo_row_backward_reference`'s signature, on the kernel."""
    return torch.ops.r1core.grpo_row_backward_triton(
        grad_pg_rows, grad_kl_rows, logp, old_logp, advantages, mask, ref_logp, rollout_logp,
        params.clip_low, params.clip_high, params.dual_clip, params.kl_estimator, params.is_cap,
    )


_backend.register_impl("grpo_loss", "triton", GRPOLossImpl(row_stats, row_backward))
