"""The embeddable surface of r1core: differentiable ops that need only torch and triton.

    from r1core.ops import fused_logprobs, group_advantages, grpo_loss, fused_grpo_loss

Each op picks the fastest backend available for its inputs' device (``backend=None``) or
the one named: ``"reference"`` (plain PyTorch), ``"triton"``, ``"cpp"``, ``"cuda"`` (and, for
the log-prob ops, ``"triton-persistent"``: a second Triton design, chosen only by name).
"""

from r1core.ops._backend import BACKENDS, available
from r1core.ops.fused_grpo_loss import fused_grpo_loss
from r1core.ops.fused_logprobs import fused_logprobs, logprobs_naive
from r1core.ops.group_advantages import GroupAdvantages, group_advantages, group_advantages_reference
from r1core.ops.grpo_loss import AGGREGATIONS, grpo_loss, grpo_token_terms
from r1core.ops.kl import KL_ESTIMATORS, kl_divergence

__all__ = [
    "AGGREGATIONS",
    "BACKENDS",
    "KL_ESTIMATORS",
    "GroupAdvantages",
    "available",
    "fused_grpo_loss",
    "fused_logprobs",
    "grpo_loss",
    "grpo_token_terms",
    "kl_divergence",
    "group_advantages",
    "group_advantages_reference",
    "logprobs_naive",
]
