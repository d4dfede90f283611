"""Policy losses: one registry, one signature.

    PolicyLoss = Callable[[LossInputs, LossConfig], tuple[Tensor, dict[str, Tensor]]]

Registered names and what they are:

- ``grpo``: PPO/GRPO clipped surrogate (dual-clip optional), per-sequence token mean
  (``seq-mean-token-mean``) as in DeepSeekMath.
- ``ppo``: the same surrogate with token-mean aggregation.
- ``dapo``: clip-higher (``clip_high`` 0.28 > ``clip_low`` 0.2) and token-level
  aggregation (DAPO).
- ``drgrpo``: token sums divided by a constant ``B * norm_length`` (Dr. GRPO: no length
  normalisation).
- ``gspo``: sequence-level, length-normalised importance ratio (GSPO), in its token form
  with the stop-gradient trick so per-token advantages are allowed.
- ``cispo``: the clipped importance weight, detached, multiplies every token's policy
  gradient (MiniMax-M1's CISPO): no token loses its gradient to clipping.

The first four are configurations of :func:`r1core.ops.grpo_loss` and run on its kernels;
``gspo`` and ``cispo`` are plain PyTorch. Every loss adds the same extras: KL to the
reference (``kl_coef`` with estimator k1/k2/k3; set it only when the KL is "in the loss"),
an entropy bonus (``entropy_coef``, needs ``LossInputs.entropy``) and truncated importance
sampling against the rollout engine's log-probs (``is_cap`` with ``rollout_logp``).

Losses return ``(loss, metrics)``; metrics are detached 0-d tensors, never synchronised to
the host.
"""

from __future__ import annotations


from dataclasses import dataclass, replace
from typing import Callable

import torch

from r1core.algos.kl import kl_estimate
from r1core.algos.registry import Registry
from r1core.ops import AGGREGATIONS, KL_ESTIMATORS, grpo_loss
from r1core.ops.grpo_loss import aggregate, check_aggregation


@dataclass
class LossInputs:
    """What every policy loss receives. All token tensors are ``[B, T]``.

    logp: log-probs of the sampled tokens under the policy being trained (differentiable).
    old_logp: the same under the policy that produced the batch (behaviour policy for the
        trainer's importance ratio).
    advantages: float ``[B]`` per sequence or ``[B, T]`` per token.
    mask: bool/float, 1 on the response tokens that enter the loss.
    ref_logp: reference-policy log-probs (needed when ``kl_coef != 0``).
    rollout_logp: log-probs reported by the rollout engine (needed when ``is_cap`` is set).
    entropy: per-token entropy of the policy (differentiable; needed when
        ``entropy_coef != 0``; reported as a metric whenever given).
    """

    logp: torch.Tensor
    old_logp: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    ref_logp: torch.Tensor | None = None
    rollout_logp: torch.Tensor | None = None
    entropy: torch.Tensor | None = None


@dataclass(frozen=True)
class LossConfig:
    """Settings shared by the policy losses. ``None`` means "the loss's own default"
    (see :data:`LOSS_DEFAULTS`), so one config can drive any registered loss.

    clip_low, clip_high: the ratio (or IS weight, for ``cispo``) is kept in
        ``[1 - clip_low, 1 + clip_high]``.
    dual_clip: ``c > 1`` bounds the loss of negative-advantage tokens at ``-c * A``
        (not defined for ``cispo``).
    kl_coef, kl_estimator: weight and estimator (k1, k2, k3) of the KL-to-reference term.
    entropy_coef: weight of the entropy bonus (subtracted from the loss).
    aggregation: ``token-mean``, ``seq-mean-token-sum``, ``seq-mean-token-mean`` or
        ``seq-mean-token-sum-norm``.
    norm_length: the constant of ``seq-mean-token-sum-norm`` (default: the padded length T;
        set it to the maximum response length so it does not change with the batch).
    is_cap: truncated importance sampling against ``rollout_logp``: the policy term is
        multiplied by ``min(pi_old / pi_rollout, is_cap)`` (per token; per sequence for
        ``gspo``).
    backend: backend of :func:`r1core.ops.grpo_loss` (``None`` = fastest available).
    """

    clip_low: float | None = None
    clip_high: float | None = None
    dual_clip: float | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    aggregation: str | None = None
    norm_length: float | None = None
    is_cap: float | None = None
    backend: str | None = None

    def __post_init__(self) -> None:
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"unknown kl_estimator {self.kl_estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")
        if self.aggregation is not None and self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        for name in ("clip_low", "clip_high"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.kl_coef < 0 or self.entropy_coef < 0:
            raise ValueError(f"kl_coef and entropy_coef must be >= 0, got {self.kl_coef}, {self.entropy_coef}")


# Each loss's defaults for the fields left at None.
LOSS_DEFAULTS: dict[str, dict[str, object]] = {
    "grpo": {"clip_low": 0.2, "clip_high": 0.2, "aggregation": "seq-mean-token-mean"},
    "ppo": {"clip_low": 0.2, "clip_high": 0.2, "aggregation": "token-mean"},
    "dapo": {"clip_low": 0.2, "clip_high": 0.28, "aggregation": "token-mean"},
    "drgrpo": {"clip_low": 0.2, "clip_high": 0.2, "aggregation": "seq-mean-token-sum-norm"},
    # GSPO's ratios are geometric means over a sequence, so its clip range is ~1e-4 wide.
    "gspo": {"clip_low": 3e-4, "clip_high": 4e-4, "aggregation": "seq-mean-token-mean"},
    # clip_low 1.0: no lower bound on the IS weight (MiniMax-M1 only tunes the upper one).
    "cispo": {"clip_low": 1.0, "clip_high": 0.28, "aggregation": "token-mean"},
}

PolicyLoss = Callable[[LossInputs, LossConfig], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]

POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")
register_policy_loss = POLICY_LOSSES.register


def get_policy_loss(name: str) -> PolicyLoss:
    """The loss registered as ``name`` (``KeyError`` listing valid names otherwise)."""
    return POLICY_LOSSES.get(name)


def compute_policy_loss(
    name: str, inputs: LossInputs, config: LossConfig | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Look up ``name`` and run it on ``inputs`` (default config when ``None``)."""
    return get_policy_loss(name)(inputs, config or LossConfig())


def resolve_config(name: str, config: LossConfig) -> LossConfig:
    """``config`` with the fields left at ``None`` filled in from :data:`LOSS_DEFAULTS`."""
    defaults = LOSS_DEFAULTS.get(name, {})
    filled = {key: value for key, value in defaults.items() if getattr(config, key) is None}
    return replace(config, **filled)


# --- shared pieces ----------------------------------------------------------------------


def _check_inputs(inputs: LossInputs, config: LossConfig) -> torch.Tensor:
    """Validate shapes and optional tensors; returns advantages as ``[B, T]``."""
    logp = inputs.logp
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    for name in ("old_logp", "mask", "ref_logp", "rollout_logp", "entropy"):
        tensor = getattr(inputs, name)
        if tensor is not None and tensor.shape != logp.shape:
            raise ValueError(f"{name} must have logp's shape {tuple(logp.shape)}, got {tuple(tensor.shape)}")
    if config.kl_coef != 0 and inputs.ref_logp is None:
        raise ValueError("kl_coef != 0 needs LossInputs.ref_logp")
    if config.entropy_coef != 0 and inputs.entropy is None:
        raise ValueError("entropy_coef != 0 needs LossInputs.entropy")
    if config.is_cap is not None and inputs.rollout_logp is None:
        raise ValueError("is_cap (truncated importance sampling) needs LossInputs.rollout_logp")
    if config.is_cap is not None and not config.is_cap > 0:
        raise ValueError(f"is_cap must be > 0, got {config.is_cap}")
    if config.dual_clip is not None and not config.dual_clip > 1:
        raise ValueError(f"dual_clip must be > 1, got {config.dual_clip}")
    advantages = inputs.advantages
    if advantages.shape == logp.shape[:1]:
        return advantages[:, None].expand_as(logp)
    if advantages.shape != logp.shape:
        raise ValueError(f"advantages must be [B] or [B, T] for logp {tuple(logp.shape)}, got {tuple(advantages.shape)}")
    return advantages


def _add_entropy_bonus(
    loss: torch.Tensor, metrics: dict[str, torch.Tensor], inputs: LossInputs, config: LossConfig, length: float
) -> torch.Tensor:
    """``loss - entropy_coef * aggregate(entropy)``, with the aggregation of the loss."""
    if inputs.entropy is None:
        return loss
    mask = inputs.mask.to(torch.float32)
    entropy_rows = (inputs.entropy.float() * mask).sum(1)
    entropy = aggregate(entropy_rows, mask.sum(1), config.aggregation, length)
    metrics["entropy"] = entropy.detach()
    if config.entropy_coef != 0:
        loss = loss - config.entropy_coef * entropy
    return loss


# --- configurations of r1core.ops.grpo_loss --------------------------------------------


# The losses that are configurations of r1core.ops.grpo_loss, and the aggregation each one
# is defined by (None: any aggregation may be configured).
OPS_LOSSES: dict[str, str | None] = {"grpo": None, "ppo": None, "dapo": "token-mean", "drgrpo": "seq-mean-token-sum-norm"}


def ops_loss_kwargs(name: str, config: LossConfig) -> dict[str, object]:
    """Keyword arguments of :func:`r1core.ops.grpo_loss` / :func:`r1core.ops.fused_grpo_loss`
    that make them compute the loss ``name`` under ``config``.

    Lets the trainer call the fused hidden-states op with the same settings; raises for
    losses with no such form (``gspo``, ``cispo``). ``entropy_coef`` is included (the fused
    op takes it; :func:`r1core.ops.grpo_loss` does not, drop it there).
    """
    if name not in OPS_LOSSES:
        raise ValueError(f"the {name!r} loss is not a configuration of r1core.ops.grpo_loss; valid: {', '.join(OPS_LOSSES)}")
    config = resolve_config(name, config)
    forced = OPS_LOSSES[name]
    if forced is not None and config.aggregation != forced:
        raise ValueError(f"the {name} loss is defined with aggregation {forced!r}, got {config.aggregation!r}")
    return {
        "clip_low": config.clip_low, "clip_high": config.clip_high, "dual_clip": config.dual_clip,
        "kl_coef": config.kl_coef, "kl_estimator": config.kl_estimator, "aggregation": config.aggregation,
        "norm_length": config.norm_length, "is_cap": config.is_cap, "entropy_coef": config.entropy_coef,
        "backend": config.backend,
    }


def _ops_loss(name: str) -> PolicyLoss:
    def loss_fn(inputs: LossInputs, config: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kwargs = ops_loss_kwargs(name, config)
        config = resolve_config(name, config)
        advantages = _check_inputs(inputs, config)
        kwargs.pop("entropy_coef")
        # The reference log-probs go in whenever given so the "kl" metric is measured even
        # when the KL is not part of the loss (kl_coef 0, e.g. KL in the reward).
        loss, metrics = grpo_loss(
            inputs.logp, inputs.old_logp, advantages, inputs.mask, ref_logp=inputs.ref_logp,
            rollout_logp=inputs.rollout_logp if config.is_cap is not None else None, **kwargs,
        )
        if inputs.ref_logp is None:
            metrics.pop("kl")  # all zeros without a reference: not a measurement
        length = check_aggregation(config.aggregation, config.norm_length, inputs.logp.shape[1])
        loss = _add_entropy_bonus(loss, metrics, inputs, config, length)
        metrics["loss"] = loss.detach()
        return loss, metrics

    loss_fn.__name__ = f"{name}_loss"
    loss_fn.__doc__ = f"The ``{name}`` configuration of r1core.ops.grpo_loss (defaults: {LOSS_DEFAULTS[name]})."
    return loss_fn


register_policy_loss("grpo")(_ops_loss("grpo"))
register_policy_loss("ppo")(_ops_loss("ppo"))
register_policy_loss("dapo")(_ops_loss("dapo"))
register_policy_loss("drgrpo")(_ops_loss("drgrpo"))


# --- plain PyTorch losses -------------------------------------------------------------


def _finish(
    pg_tokens: torch.Tensor,
    inputs: LossInputs,
    config: LossConfig,
    extra_metrics: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Aggregate per-token policy terms ``[B, T]``, add KL and entropy, build the metrics."""
    mask = inputs.mask.to(torch.float32)
    tokens = mask.sum(1)
    length = check_aggregation(config.aggregation, config.norm_length, inputs.logp.shape[1])
    pg_loss = aggregate((pg_tokens * mask).sum(1), tokens, config.aggregation, length)
    loss = pg_loss
    total = tokens.sum().clamp(min=1)
    metrics = dict(extra_metrics)
    metrics["pg_loss"] = pg_loss.detach()
    metrics["num_tokens"] = tokens.sum()
    if inputs.ref_logp is not None:
        kl_tokens = kl_estimate(inputs.logp.float(), inputs.ref_logp.float(), config.kl_estimator)
        kl_loss = aggregate((kl_tokens * mask).sum(1), tokens, config.aggregation, length)
        metrics["kl"] = ((kl_tokens * mask).sum() / total).detach()
        if config.kl_coef != 0:
            loss = loss + config.kl_coef * kl_loss
    loss = _add_entropy_bonus(loss, metrics, inputs, config, length)
    metrics["loss"] = loss.detach()
    return loss, metrics


@register_policy_loss("gspo")
def gspo_loss(inputs: LossInputs, config: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO (Zheng et al. 2025), token form.

    ``s_i = exp(mean_t(logp - old_logp))`` is the sequence's length-normalised ratio. Each
    token uses ``s_it = sg(s_i) * exp(logp_t - sg(logp_t))``: its value is ``s_i`` and its
    gradient ``s_i * d logp_t``, so with a per-sequence advantage and ``seq-mean-token-mean``
    aggregation the gradient equals that of sequence-level GSPO, and clipping (decided on
    ``s_i``) removes or keeps a whole sequence. Per token:
    ``max(-A * s_it, -A * clip(s_it, 1 - clip_low, 1 + clip_high))``, optionally dual-clipped,
    times the sequence-level truncated IS weight ``min(exp(mean_t(old - rollout)), is_cap)``.
    """
    config = resolve_config("gspo", config)
    advantages = _check_inputs(inputs, config).float()
    mask = inputs.mask.to(torch.float32)
    tokens = mask.sum(1).clamp(min=1)
    logp = inputs.logp.float()
    seq_log_ratio = ((logp - inputs.old_logp.float()) * mask).sum(1) / tokens
    seq_ratio = torch.exp(seq_log_ratio)  # [B]
    token_ratio = torch.exp(seq_log_ratio.detach()[:, None] + logp - logp.detach())
    pg_unclipped = -advantages * token_ratio
    pg_clipped = -advantages * torch.clamp(token_ratio, 1.0 - config.clip_low, 1.0 + config.clip_high)
    pg = torch.maximum(pg_unclipped, pg_clipped)
    if config.dual_clip is not None:
        pg = torch.where(advantages < 0, torch.minimum(pg, -config.dual_clip * advantages), pg)
    if config.is_cap is not None:
        seq_is = ((inputs.old_logp.float() - inputs.rollout_logp.float()) * mask).sum(1) / tokens
        pg = pg * torch.clamp(torch.exp(seq_is), max=config.is_cap)[:, None]
    nonempty = (mask.sum(1) > 0).float()
    num_sequences = nonempty.sum().clamp(min=1)
    ratio = seq_ratio.detach()
    metrics = {
        "clip_frac_low": ((ratio < 1.0 - config.clip_low).float() * nonempty).sum() / num_sequences,
        "clip_frac_high": ((ratio > 1.0 + config.clip_high).float() * nonempty).sum() / num_sequences,
        "ratio_mean": (ratio * nonempty).sum() / num_sequences,
        "ratio_max": (ratio * nonempty).max() if ratio.numel() else ratio.new_zeros(()),
    }
    return _finish(pg, inputs, config, metrics)


@register_policy_loss("cispo")
def cispo_loss(inputs: LossInputs, config: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CISPO (MiniMax-M1): per token ``-sg(w) * A * exp(logp - sg(logp))`` with
    ``w = clip(ratio, 1 - clip_low, 1 + clip_high)``.

    The value of each term is ``-w * A`` (a clipped surrogate) and its gradient is
    ``-w * A * d logp``, the CISPO gradient: every token keeps its gradient, only the size
    of its importance weight is bounded. ``clip_low >= 1`` means no lower bound. The
    truncated IS weight against the rollout multiplies ``w`` per token.
    """
    config = resolve_config("cispo", config)
    if config.dual_clip is not None:
        raise ValueError("dual_clip is not defined for the cispo loss (its IS weight is already clipped)")
    advantages = _check_inputs(inputs, config).float()
    logp = inputs.logp.float()
    ratio = torch.exp(logp.detach() - inputs.old_logp.float())
    lower = max(0.0, 1.0 - config.clip_low)
    weight = torch.clamp(ratio, min=lower, max=1.0 + config.clip_high)
    if config.is_cap is not None:
        weight = weight * torch.clamp(torch.exp(inputs.old_logp.float() - inputs.rollout_logp.float()), max=config.is_cap)
    pg = -weight * advantages * torch.exp(logp - logp.detach())
    mask = inputs.mask.to(torch.float32)
    total = mask.sum().clamp(min=1)
    metrics = {
        "clip_frac_low": ((ratio < lower).float() * mask).sum() / total,
        "clip_frac_high": ((ratio > 1.0 + config.clip_high).float() * mask).sum() / total,
        "ratio_mean": (ratio * mask).sum() / total,
        "ratio_max": torch.where(mask > 0, ratio, torch.zeros_like(ratio)).max() if ratio.numel() else ratio.new_zeros(()),
    }
    return _finish(pg, inputs, config, metrics)


