"""Per-token estimators of KL(policy || reference): the one numeric definition in r1core.

With ``d = logp - ref_logp`` (log-probs of the sampled token, which was drawn from the
policy), the estimators of Schulman's note are

    k1 = d                       unbiased, can be negative
    k2 = d^2 / 2                 biased, low variance
    k3 = exp(-d) + d - 1         unbiased, always >= 0 (GRPO's choice)

and their derivatives in ``logp`` are ``1``, ``d`` and ``1 - exp(-d)``. The loss op
(:func:`r1core.ops.grpo_loss`, "KL in the loss") and the trainer's "KL in the reward"
(:mod:`r1core.algos.kl`) both call :func:`kl_divergence`; the Triton and C++ kernels take
the estimator as its index in :data:`KL_ESTIMATORS` and are tested against this module.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimator_index(estimator: str | int) -> int:
    """The kernels' integer code of ``estimator`` (a name of :data:`KL_ESTIMATORS` or its
    index); raises ``ValueError`` naming the valid ones."""
    if isinstance(estimator, int) and not isinstance(estimator, bool) and 0 <= estimator < len(KL_ESTIMATORS):
        return estimator
    if estimator in KL_ESTIMATORS:
        return KL_ESTIMATORS.index(estimator)
    raise ValueError(f"unknown kl_estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")


def kl_divergence(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str | int = "k3") -> torch.Tensor:
    """Per-token KL estimate, the elementwise formula above; differentiable in both inputs.
    Shapes broadcast; the result has the promoted dtype of the inputs."""
    index = kl_estimator_index(estimator)
    diff = logp - ref_logp
    if index == 0:
        return diff
    if index == 1:
        return 0.5 * diff * diff
    return torch.exp(-diff) + diff - 1.0


def kl_divergence_grad(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str | int = "k3") -> torch.Tensor:
    """``d kl_divergence / d logp`` in closed form (what the kernels compute), elementwise."""
    index = kl_estimator_index(estimator)
    diff = logp - ref_logp
    if index == 0:
        return torch.ones_like(diff)
    if index == 1:
        return diff
    return 1.0 - torch.exp(-diff)
