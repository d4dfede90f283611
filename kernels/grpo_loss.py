"""Triton kernels of the clipped GRPO loss: per-row statistics (forward) and the per-token
gradient of the row sums (backward). The per-token formula is in r1core/ops/grpo_loss.py.

Both kernels run one program per row (sequence) and stream the row in ``BLOCK_T`` tiles,
reading every input exactly once; the forward keeps ``BLOCK_T``-wide accumulators and reduces
them once at the end. Nothing ``[B, T]``-sized is written by the forward, so forward + backward
move ``2 * reads + one [B, T] write`` and the op is bound by memory bandwidth.

Strides: every ``[B, T]`` input has unit stride along T and any row stride, except the
advantages, which may be a ``[B]`` vector expanded along T (column stride 0,
``ADV_PER_ROW``): then one scalar is loaded per row. Optional inputs (``ref_logp``,
``rollout_logp``) are switched on by constexpr flags, so absent ones cost nothing. Masks may
be bool or float (weights). ``COMPUTE`` is float32, or float64 for float64 inputs.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _scalar(value, COMPUTE: tl.constexpr):
    """A float64 kernel argument rounded once to the compute type: the same value torch uses
    when it applies a Python float to a float32 tensor."""
    return tl.full([], value, tl.float64).to(COMPUTE)


@triton.jit
def _token_terms(
    logp_ptr, old_ptr, adv_ptr, mask_ptr, ref_ptr, rollout_ptr,
    row, cols, in_row,
    stride_logp, stride_old, stride_adv_b, stride_adv_t, stride_mask, stride_ref, stride_rollout,
    clip_lower, clip_upper, neg_dual_clip, is_cap,
    HAS_REF: tl.constexpr, HAS_IS: tl.constexpr, USE_DUAL: tl.constexpr, ADV_PER_ROW: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    """Load one tile and evaluate the shared part of forward and backward."""
    logp = tl.load(logp_ptr + row * stride_logp + cols, mask=in_row, other=0.0).to(COMPUTE)
    old = tl.load(old_ptr + row * stride_old + cols, mask=in_row, other=0.0).to(COMPUTE)
    if ADV_PER_ROW:
        # One load per row, broadcast to the tile (a register splat on the GPU).
        adv = tl.zeros_like(logp) + tl.load(adv_ptr + row * stride_adv_b).to(COMPUTE)
    else:
        adv = tl.load(adv_ptr + row * stride_adv_b + cols * stride_adv_t, mask=in_row, other=0.0).to(COMPUTE)
    mask = tl.load(mask_ptr + row * stride_mask + cols, mask=in_row, other=0).to(COMPUTE)
    ratio = tl.exp(logp - old)
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * tl.minimum(tl.maximum(ratio, clip_lower), clip_upper)
    # Strict comparison, as the reference: on a tie the unclipped branch (with gradient) wins.
    clipped = pg_clipped > pg_unclipped
    pg = tl.maximum(pg_unclipped, pg_clipped)
    dual = clipped  # placeholder, read only when USE_DUAL
    if USE_DUAL:
        lower_bound = neg_dual_clip * adv
        dual = (adv < 0) & (lower_bound < pg)
        pg = tl.where(dual, lower_bound, pg)
    is_weight = 1.0
    if HAS_IS:
        rollout = tl.load(rollout_ptr + row * stride_rollout + cols, mask=in_row, other=0.0).to(COMPUTE)
        is_weight = tl.minimum(tl.exp(old - rollout), is_cap)
        pg = pg * is_weight
    diff = logp
    if HAS_REF:
        diff = logp - tl.load(ref_ptr + row * stride_ref + cols, mask=in_row, other=0.0).to(COMPUTE)
    return ratio, pg, pg_unclipped, clipped, dual, is_weight, diff, mask


@triton.jit
def grpo_row_stats_kernel(
    logp_ptr, old_ptr, adv_ptr, mask_ptr, ref_ptr, rollout_ptr, stats_ptr,
    num_cols,
    stride_logp, stride_old, stride_adv_b, stride_adv_t, stride_mask, stride_ref, stride_rollout,
    clip_lower: tl.float64, clip_upper: tl.float64, neg_dual_clip: tl.float64, is_cap: tl.float64,
    HAS_REF: tl.constexpr, HAS_IS: tl.constexpr, USE_DUAL: tl.constexpr, ADV_PER_ROW: tl.constexpr,
    KL_ESTIMATOR: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """Programs: one per row. Writes ``stats[row, :8]`` (columns of ``ROW_STATS``)."""
    row = tl.program_id(0).to(tl.int64)
    clip_lower, clip_upper = _scalar(clip_lower, COMPUTE), _scalar(clip_upper, COMPUTE)
    neg_dual_clip, is_cap = _scalar(neg_dual_clip, COMPUTE), _scalar(is_cap, COMPUTE)
    offsets = tl.arange(0, BLOCK_T)
    acc_pg = tl.zeros([BLOCK_T], dtype=COMPUTE)
    acc_kl = tl.zeros([BLOCK_T], dtype=COMPUTE)
    acc_mask = tl.zeros([BLOCK_T], dtype=COMPUTE)
    acc_low = tl.zeros([BLOCK_T], dtype=COMPUTE)
    acc_high = tl.zeros([BLOCK_T], dtype=COMPUTE)
    acc_dual = tl.zeros([BLOCK_T], dtype=COMPUTE)
    acc_ratio = tl.zeros([BLOCK_T], dtype=COMPUTE)
    # ratio > 0, so starting the max at 0 gives 0 for a row without tokens, as the reference.
    max_ratio = tl.zeros([BLOCK_T], dtype=COMPUTE)
    for start in range(0, num_cols, BLOCK_T):
        cols = start + offsets
        in_row = cols < num_cols
        ratio, pg, _, clipped, dual, _, diff, mask = _token_terms(
            logp_ptr, old_ptr, adv_ptr, mask_ptr, ref_ptr, rollout_ptr, row, cols, in_row,
            stride_logp, stride_old, stride_adv_b, stride_adv_t, stride_mask, stride_ref, stride_rollout,
            clip_lower, clip_upper, neg_dual_clip, is_cap, HAS_REF, HAS_IS, USE_DUAL, ADV_PER_ROW, COMPUTE,
        )
        acc_pg += pg * mask
        if HAS_REF:
            if KL_ESTIMATOR == 0:
                kl = diff
            elif KL_ESTIMATOR == 1:
                kl = 0.5 * diff * diff
            else:
                kl = tl.exp(-diff) + diff - 1.0
            acc_kl += kl * mask
        acc_mask += mask
        acc_low += tl.where(clipped & (ratio < clip_lower), mask, 0.0)
        acc_high += tl.where(clipped & (ratio > clip_upper), mask, 0.0)
        if USE_DUAL:
            acc_dual += tl.where(dual, mask, 0.0)
        acc_ratio += ratio * mask
        max_ratio = tl.maximum(max_ratio, tl.where(mask > 0, ratio, 0.0))
    out = stats_ptr + row * 8
    tl.store(out + 0, tl.sum(acc_pg, axis=0))
    tl.store(out + 1, tl.sum(acc_kl, axis=0))
    tl.store(out + 2, tl.sum(acc_mask, axis=0))
    tl.store(out + 3, tl.sum(acc_low, axis=0))
    tl.store(out + 4, tl.sum(acc_high, axis=0))
    tl.store(out + 5, tl.sum(acc_dual, axis=0))
    tl.store(out + 6, tl.sum(acc_ratio, axis=0))
    tl.store(out + 7, tl.max(max_ratio, axis=0))


@triton.jit
def grpo_row_backward_kernel(
    grad_pg_rows_ptr, grad_kl_rows_ptr,
    logp_ptr, old_ptr, adv_ptr, mask_ptr, ref_ptr, rollout_ptr, grad_ptr,
    num_cols,
    stride_logp, stride_old, stride_adv_b, stride_adv_t, stride_mask, stride_ref, stride_rollout, stride_grad,
    clip_lower: tl.float64, clip_upper: tl.float64, neg_dual_clip: tl.float64, is_cap: tl.float64,
    HAS_REF: tl.constexpr, HAS_IS: tl.constexpr, USE_DUAL: tl.constexpr, ADV_PER_ROW: tl.constexpr,
    KL_ESTIMATOR: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """Programs: one per row. ``grad[row, t] = mask * (g_pg[row] * d pg/d logp +
    g_kl[row] * d kl/d logp)``, stored in ``grad``'s dtype."""
    row = tl.program_id(0).to(tl.int64)
    clip_lower, clip_upper = _scalar(clip_lower, COMPUTE), _scalar(clip_upper, COMPUTE)
    neg_dual_clip, is_cap = _scalar(neg_dual_clip, COMPUTE), _scalar(is_cap, COMPUTE)
    offsets = tl.arange(0, BLOCK_T)
    grad_pg_row = tl.load(grad_pg_rows_ptr + row).to(COMPUTE)
    grad_kl_row = tl.load(grad_kl_rows_ptr + row).to(COMPUTE)
    for start in range(0, num_cols, BLOCK_T):
        cols = start + offsets
        in_row = cols < num_cols
        _, _, pg_unclipped, clipped, dual, is_weight, diff, mask = _token_terms(
            logp_ptr, old_ptr, adv_ptr, mask_ptr, ref_ptr, rollout_ptr, row, cols, in_row,
            stride_logp, stride_old, stride_adv_b, stride_adv_t, stride_mask, stride_ref, stride_rollout,
            clip_lower, clip_upper, neg_dual_clip, is_cap, HAS_REF, HAS_IS, USE_DUAL, ADV_PER_ROW, COMPUTE,
        )
        # d(-A * ratio)/d logp = -A * ratio; a clipped (or dual-clipped) token is constant in
        # logp, so its gradient is 0.
        grad_pg = tl.where(clipped, 0.0, pg_unclipped)
        if USE_DUAL:
            grad_pg = tl.where(dual, 0.0, grad_pg)
        if HAS_IS:
            grad_pg = grad_pg * is_weight
        grad = grad_pg_row * grad_pg
        if HAS_REF:
            if KL_ESTIMATOR == 0:
                grad_kl = tl.full([BLOCK_T], 1.0, dtype=COMPUTE)
            elif KL_ESTIMATOR == 1:
                grad_kl = diff
            else:
                grad_kl = 1.0 - tl.exp(-diff)
            grad = grad + grad_kl_row * grad_kl
        grad = grad * mask
        tl.store(grad_ptr + row * stride_grad + cols, grad.to(grad_ptr.dtype.element_ty), mask=in_row)


def block_t(num_cols: int) -> tuple[int, int]:
    """``(BLOCK_T, num_warps)``: tiles of up to 1024 tokens over 8 warps, i.e. 4 tokens per
    thread per input. With eight ``BLOCK_T``-wide accumulators in the forward, 4 per thread
    keeps the full-option forward under 80 registers (sm_90 build: see
    tests/kernels/test_compile_sm90.py), so two to three 256-thread programs fit on an SM and
    keep enough loads in flight; 8 tokens per thread measured 136-150 registers (one program
    per SM). Short rows get smaller tiles so a program does not mostly load padding."""
    block = min(1024, max(16, triton.next_power_of_2(max(num_cols, 1))))
    return block, 8 if block >= 1024 else 4
