"""KL-divergence estimators between the policy and the reference policy, per token.

With ``d = logp - ref_logp`` (log-probs of the sampled token, which was drawn from the
policy), the estimators of KL(policy || reference) from Schulman's note are

    k1 = d                       unbiased, can be negative
    k2 = d^2 / 2                 biased, low variance
    k3 = exp(-d) + d - 1         unbiased, always >= 0 (GRPO's choice)

The same definitions are used inside :func:`r1core.ops.grpo_loss` ("kl in the loss"); this
module gives them to the trainer for "kl in the reward" (a per-token penalty folded into
the returns before the advantages are computed, as in PPO-RLHF and REINFORCE++).
"""

from __future__ import annotations

import torch

from r1core.ops import KL_ESTIMATORS

KL_MODES = ("loss", "reward", "off")


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL estimate ``[B, T]`` (float32 or the inputs' float64) of ``logp`` vs
    ``ref_logp`` (both ``[B, T]``). Differentiable in both arguments."""
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} differ in shape")
    diff = logp - ref_logp
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return 0.5 * diff * diff
    if estimator == "k3":
        return torch.exp(-diff) + diff - 1.0
    raise ValueError(f"unknown kl_estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")


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
