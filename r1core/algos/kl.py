"""KL to the reference policy for the trainer: "kl in the reward" (a per-token penalty folded
into the returns before the advantages are computed, as in PPO-RLHF and REINFORCE++).

The estimators themselves (k1, k2, k3) have one definition, :func:`r1core.ops.kl.kl_divergence`,
which :func:`r1core.ops.grpo_loss` uses for "kl in the loss".
"""

from __future__ import annotations

import torch

from r1core.ops.kl import KL_ESTIMATORS, kl_divergence

KL_MODES = ("loss", "reward", "off")


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL estimate ``[B, T]`` (float32 or the inputs' float64) of ``logp`` vs
    ``ref_logp`` (both ``[B, T]``). Differentiable in both arguments."""
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} differ in shape")
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown kl_estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")
    return kl_divergence(logp, ref_logp, estimator)


def kl_reward(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    coef: float,
    estimator: str = "k1",
) -> torch.Tensor:
    """Per-token rewards ``-coef * KL`` ``[B, T]`` (zero outside ``mask``), detached.

    Pass the result as :attr:`AdvantageInputs.token_rewards`. The rollout's log-probs are
    constants for the advantage computation, hence the ``detach``.
    """
    if coef < 0:
        raise ValueError(f"kl coef must be >= 0, got {coef}")
    kl = kl_estimate(logp.detach().float(), ref_logp.detach().float(), estimator)
    return -coef * kl * mask.to(kl.dtype)
