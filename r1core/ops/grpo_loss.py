"""The clipped GRPO/PPO policy loss with KL to a reference and truncated importance sampling.

Per token (all log-probs are of the sampled token):

    ratio = exp(logp - old_logp)
    pg    = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))
    pg    = min(pg, -dual_clip * A)                  where A < 0, with dual_clip
    pg   *= min(exp(old_logp - rollout_logp), is_cap)    with rollout_logp and is_cap
    kl    = kl_divergence(logp, ref_logp, kl_estimator)     (r1core/ops/kl.py: k1, k2, k3)
    loss_token = pg + kl_coef * kl

Backends reduce each row (sequence) to a few sums (:data:`ROW_STATS`); the aggregation into
the loss is plain PyTorch on those ``[B]`` sums, so autograd carries its weights back to the
rows and the backend's backward turns them into the per-token gradient. No ``[B, T]``
intermediate is kept between forward and backward.

Reading order: per-token specification, reference primitives, autograd, aggregation,
public function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from r1core.ops import _backend
from r1core.ops.kl import KL_ESTIMATORS, kl_divergence, kl_divergence_grad, kl_estimator_index

AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")

# Columns of the per-row statistics every backend returns, float32 [B, 8].
ROW_STATS = ("pg_sum", "kl_sum", "mask_sum", "clip_low", "clip_high", "dual_clip", "ratio_sum", "ratio_max")


@dataclass(frozen=True)
class ClipParams:
    """Scalars of the per-token loss, in the form the kernels take them.

    ``dual_clip`` 0 means off (else it must exceed 1); ``is_cap`` 0 means no truncated
    importance sampling; ``kl_estimator`` indexes :data:`KL_ESTIMATORS`.
    """

    clip_low: float
    clip_high: float
    dual_clip: float
    kl_estimator: int
    is_cap: float


def grpo_token_terms(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    ref_logp: torch.Tensor | None,
    rollout_logp: torch.Tensor | None,
    params: ClipParams,
) -> dict[str, torch.Tensor]:
    """The per-token specification, differentiable by autograd. All tensors ``[B, T]``.

    Returns ``pg`` and ``kl`` (the loss terms) and the boolean masks ``clip_low``,
    ``clip_high``, ``dual_clip`` (where clipping removed the gradient) and ``ratio``.
    """
    ratio = torch.exp(logp - old_logp)
    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * torch.clamp(ratio, 1.0 - params.clip_low, 1.0 + params.clip_high)
    pg = torch.maximum(pg_unclipped, pg_clipped)
    clipped = pg_clipped > pg_unclipped
    dual = torch.zeros_like(clipped)
    if params.dual_clip > 0:
        lower_bound = -params.dual_clip * advantages
        dual = (advantages < 0) & (lower_bound < pg)
        pg = torch.where(dual, lower_bound, pg)
    if params.is_cap > 0 and rollout_logp is not None:
        pg = pg * torch.clamp(torch.exp(old_logp - rollout_logp), max=params.is_cap)
    kl = torch.zeros_like(logp) if ref_logp is None else kl_divergence(logp, ref_logp, params.kl_estimator)
    return {
        "pg": pg,
        "kl": kl,
        "clip_low": clipped & (ratio < 1.0 - params.clip_low),
        "clip_high": clipped & (ratio > 1.0 + params.clip_high),
        "dual_clip": dual,
        "ratio": ratio,
    }


# --- reference primitives --------------------------------------------------------------


def grpo_row_stats_reference(logp, old_logp, advantages, mask, ref_logp, rollout_logp, params: ClipParams):
    """Row reduction of the per-token terms: float32 (float64 for float64 input) ``[B, 8]``
    with the columns of :data:`ROW_STATS`. ``advantages`` is ``[B, T]`` (may be expanded)."""
    dtype = torch.float64 if logp.dtype == torch.float64 else torch.float32
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    terms = grpo_token_terms(cast(logp), cast(old_logp), cast(advantages), cast(ref_logp), cast(rollout_logp), params)
    m = mask.to(dtype)
    ratio = terms["ratio"]
    ratio_max = torch.where(m > 0, ratio, torch.zeros_like(ratio)).amax(dim=1)
    return torch.stack(
        [
            (terms["pg"] * m).sum(1),
            (terms["kl"] * m).sum(1),
            m.sum(1),
            (terms["clip_low"] * m).sum(1),
            (terms["clip_high"] * m).sum(1),
            (terms["dual_clip"] * m).sum(1),
            (ratio * m).sum(1),
            ratio_max,
        ],
        dim=1,
    )


def grpo_row_backward_reference(grad_pg_rows, grad_kl_rows, logp, old_logp, advantages, mask, ref_logp, rollout_logp, params: ClipParams):
    """``d/d logp`` of ``sum_b grad_pg_rows[b] * pg_sum[b] + grad_kl_rows[b] * kl_sum[b]``.

    Closed form, as the kernels compute it. Returns float32 (float64) ``[B, T]``.
    """
    dtype = torch.float64 if logp.dtype == torch.float64 else torch.float32
    lp, old, adv = logp.to(dtype), old_logp.to(dtype), advantages.to(dtype)
    ratio = torch.exp(lp - old)
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * torch.clamp(ratio, 1.0 - params.clip_low, 1.0 + params.clip_high)
    # The unclipped branch carries the gradient -A * ratio; where the clipped branch is the
    # larger one, the ratio lies outside the clip range and the gradient is 0.
    grad_pg = torch.where(pg_clipped > pg_unclipped, torch.zeros_like(ratio), pg_unclipped)
    if params.dual_clip > 0:
        pg = torch.maximum(pg_unclipped, pg_clipped)
        dual = (adv < 0) & (-params.dual_clip * adv < pg)
        grad_pg = torch.where(dual, torch.zeros_like(grad_pg), grad_pg)
    if params.is_cap > 0 and rollout_logp is not None:
        grad_pg = grad_pg * torch.clamp(torch.exp(old - rollout_logp.to(dtype)), max=params.is_cap)
    m = mask.to(dtype)
    grad = grad_pg_rows.to(dtype)[:, None] * grad_pg
    if ref_logp is not None:
        grad = grad + grad_kl_rows.to(dtype)[:, None] * kl_divergence_grad(lp, ref_logp.to(dtype), params.kl_estimator)
    return grad * m


@dataclass(frozen=True)
class GRPOLossImpl:
    """A backend's primitives, with the signatures of the reference functions above."""

    row_stats: Callable[..., torch.Tensor]
    row_backward: Callable[..., torch.Tensor]


_backend.register_impl("grpo_loss", "reference", GRPOLossImpl(grpo_row_stats_reference, grpo_row_backward_reference))


class _GRPORowStatsFunction(torch.autograd.Function):
    """``[B, 8]`` row statistics, differentiable in ``logp`` through columns 0 and 1."""

    @staticmethod
    def forward(ctx, logp, old_logp, advantages, mask, ref_logp, rollout_logp, params, impl):
        stats = impl.row_stats(logp, old_logp, advantages, mask, ref_logp, rollout_logp, params)
        ctx.save_for_backward(logp, old_logp, advantages, mask, ref_logp, rollout_logp)
        ctx.params, ctx.impl = params, impl
        return stats

    @staticmethod
    def backward(ctx, grad_stats):
        logp, old_logp, advantages, mask, ref_logp, rollout_logp = ctx.saved_tensors
        grad_stats = grad_stats.contiguous()
        grad = ctx.impl.row_backward(
            grad_stats[:, 0].contiguous(), grad_stats[:, 1].contiguous(),
            logp, old_logp, advantages, mask, ref_logp, rollout_logp, ctx.params,
        )
        return grad.to(logp.dtype), None, None, None, None, None, None, None


def aggregate(row_values: torch.Tensor, row_tokens: torch.Tensor, aggregation: str, norm_length: float) -> torch.Tensor:
    """Reduce per-row sums ``[B]`` (with per-row token counts ``[B]``) to the scalar loss.

    token-mean: sum / total tokens. seq-mean-token-sum: mean over rows of the row sums.
    seq-mean-token-mean: mean over non-empty rows of the row means.
    seq-mean-token-sum-norm: sum / (B * norm_length) (Dr. GRPO's constant normaliser).
    """
    if aggregation == "token-mean":
        return row_values.sum() / row_tokens.sum().clamp(min=1)
    if aggregation == "seq-mean-token-sum":
        return row_values.mean()
    if aggregation == "seq-mean-token-mean":
        nonempty = (row_tokens > 0).to(row_values.dtype)
        return (row_values / row_tokens.clamp(min=1) * nonempty).sum() / nonempty.sum().clamp(min=1)
    if aggregation == "seq-mean-token-sum-norm":
        return row_values.sum() / (row_values.shape[0] * norm_length)
    raise ValueError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")


def aggregation_denominator(row_tokens: torch.Tensor, aggregation: str, norm_length: float) -> float:
    """What :func:`aggregate` divides the batch's summed row terms by, before its clamps:
    the token count (token-mean), the row count (seq-mean-token-sum), the non-empty row
    count (seq-mean-token-mean) or rows x ``norm_length`` (seq-mean-token-sum-norm).

    A trainer that splits a batch into micro-batches (and data-parallel shares) weights
    micro-batch ``i``'s loss by ``denominator_i / sum(denominators)`` to get the loss of the
    whole batch, not the mean of per-micro-batch means (which over-weights the tokens of
    short micro-batches under token-mean).
    """
    if aggregation == "token-mean":
        return float(row_tokens.sum())
    if aggregation == "seq-mean-token-sum":
        return float(row_tokens.shape[0])
    if aggregation == "seq-mean-token-mean":
        return float((row_tokens > 0).sum())
    if aggregation == "seq-mean-token-sum-norm":
        return float(row_tokens.shape[0] * norm_length)
    raise ValueError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")


def loss_from_row_stats(
    stats: torch.Tensor, kl_coef: float, aggregation: str, norm_length: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The scalar loss and its metrics (0-d tensors, no host sync) from ``[B, 8]`` row stats."""
    tokens = stats[:, 2].detach()
    pg_loss = aggregate(stats[:, 0], tokens, aggregation, norm_length)
    kl_loss = aggregate(stats[:, 1], tokens, aggregation, norm_length)
    loss = pg_loss + kl_coef * kl_loss if kl_coef != 0 else pg_loss
    detached = stats.detach()
    total = detached[:, 2].sum().clamp(min=1)
    metrics = {
        "pg_loss": pg_loss.detach(),
        "kl": detached[:, 1].sum() / total,
        "clip_frac_low": detached[:, 3].sum() / total,
        "clip_frac_high": detached[:, 4].sum() / total,
        "dual_clip_frac": detached[:, 5].sum() / total,
        "ratio_mean": detached[:, 6].sum() / total,
        "ratio_max": detached[:, 7].max() if detached.shape[0] else detached.new_zeros(()),
        "num_tokens": detached[:, 2].sum(),
    }
    return loss, metrics


def make_clip_params(clip_low, clip_high, dual_clip, kl_estimator, is_cap) -> ClipParams:
    """Validate the scalar arguments shared by :func:`grpo_loss` and the fused loss."""
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
    if clip_low >= 1:
        raise ValueError(f"clip_low must be < 1 (the lower bound is 1 - clip_low), got {clip_low}")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip must be > 1 (it bounds the loss at -dual_clip * A for A < 0), got {dual_clip}")
    if kl_estimator not in KL_ESTIMATORS:  # names only here: the integer codes are internal
        raise ValueError(f"unknown kl_estimator {kl_estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")
    if is_cap is not None and not is_cap > 0:
        raise ValueError(f"is_cap must be > 0, got {is_cap}")
    return ClipParams(
        float(clip_low), float(clip_high), float(dual_clip or 0.0), kl_estimator_index(kl_estimator), float(is_cap or 0.0)
    )


def check_aggregation(aggregation: str, norm_length: float | None, default_length: int) -> float:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    length = float(default_length if norm_length is None else norm_length)
    if not length > 0:
        raise ValueError(f"norm_length must be > 0, got {norm_length}")
    return length


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    aggregation: str = "token-mean",
    norm_length: float | None = None,
    rollout_logp: torch.Tensor | None = None,
    is_cap: float | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped GRPO loss (see the module docstring for the per-token formula).

    Args:
        logp: ``[B, T]`` log-probs of the sampled tokens under the policy being trained
            (differentiable).
        old_logp: ``[B, T]`` the same under the policy that generated the batch.
        advantages: ``[B]`` per sequence or ``[B, T]`` per token.
        mask: ``[B, T]`` bool or float: 1 on response tokens (float values weight tokens).
        ref_logp: ``[B, T]`` reference-policy log-probs; needed when ``kl_coef != 0``.
        clip_low, clip_high: ratio bounds ``1 - clip_low`` and ``1 + clip_high``
            (``clip_high > clip_low`` is DAPO's clip-higher).
        dual_clip: ``c > 1`` bounds the loss of negative-advantage tokens at ``-c * A``.
        kl_coef, kl_estimator: weight and estimator (``k1``, ``k2``, ``k3``) of the KL term.
        aggregation: ``token-mean``, ``seq-mean-token-sum``, ``seq-mean-token-mean`` or
            ``seq-mean-token-sum-norm`` (divides by ``B * norm_length``; default ``T``).
        rollout_logp, is_cap: truncated importance sampling against the rollout engine's
            log-probs: the policy term is multiplied by ``min(exp(old - rollout), is_cap)``.
        backend: ``None``/``"auto"``, ``"reference"``, ``"triton"``, ``"cpp"``, ``"cuda"``.

    Returns:
        ``(loss, metrics)``: loss a 0-d float32 tensor; metrics a dict of 0-d tensors
        (``pg_loss``, ``kl``, ``clip_frac_low``, ``clip_frac_high``, ``dual_clip_frac``,
        ``ratio_mean``, ``ratio_max``, ``num_tokens``), never synchronised to the host.
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    for name, tensor in (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp), ("rollout_logp", rollout_logp)):
        if tensor is not None and tensor.shape != logp.shape:
            raise ValueError(f"{name} must have logp's shape {tuple(logp.shape)}, got {tuple(tensor.shape)}")
    if advantages.shape == logp.shape[:1]:
        advantages = advantages[:, None].expand_as(logp)
    elif advantages.shape != logp.shape:
        raise ValueError(f"advantages must be [B] or [B, T] for logp {tuple(logp.shape)}, got {tuple(advantages.shape)}")
    if kl_coef != 0 and ref_logp is None:
        raise ValueError("kl_coef != 0 needs ref_logp")
    if (rollout_logp is None) != (is_cap is None):
        raise ValueError("truncated importance sampling needs both rollout_logp and is_cap")
    params = make_clip_params(clip_low, clip_high, dual_clip, kl_estimator, is_cap)
    length = check_aggregation(aggregation, norm_length, logp.shape[1])
    _, impl = _backend.resolve("grpo_loss", backend, logp.device)
    stats = _GRPORowStatsFunction.apply(logp, old_logp, advantages, mask, ref_logp, rollout_logp, params, impl)
    return loss_from_row_stats(stats, kl_coef, aggregation, length)
