"""The Triton backend of ``fused_logprobs`` (and so of ``fused_grpo_loss``).

The two primitives are registered as ``torch.library`` custom ops with fake (meta)
implementations, so they compose with ``torch.compile`` and pass ``opcheck``:

* ``r1core::logprobs_stats_triton(hidden, weight, labels, inv_temperature, need_entropy)``
  -> float32 ``[4, N]``
* ``r1core::logprobs_backward_triton(hidden, weight, labels, lse, entropy, grad_logp,
  grad_entropy, inv_temperature)`` -> ``(grad_hidden [N, H], grad_weight [V, H])``

Their contracts are those of the reference primitives in :mod:`r1core.ops.fused_logprobs`; the
autograd Function there combines them (and the tensor-parallel all-reduces) into the op.
``custom_op`` + ``register_fake`` is used rather than ``triton_op``: the latter hands fake
tensors to the Triton interpreter under ``torch.compile`` when ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch

from r1core.kernels import fused_logprobs as kernels
from r1core.kernels import fused_logprobs_persistent as persistent
from r1core.ops import _backend
from r1core.ops.fused_logprobs import NUM_STATS, LogprobsImpl


def _register(backend: str, suffix: str, design) -> tuple:
    """Register ``design``'s two kernels (a module with ``logprobs_stats`` and
    ``logprobs_backward``) as the custom ops ``r1core::logprobs_stats_<suffix>`` and
    ``r1core::logprobs_backward_<suffix>``, with their fake implementations, and as the
    ``fused_logprobs`` backend ``backend``. Returns the two ops."""

    def stats(
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        inv_temperature: float,
        need_entropy: bool,
    ) -> torch.Tensor:
        return design.logprobs_stats(hidden, weight, labels, inv_temperature, need_entropy)

    def backward(
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        lse: torch.Tensor,
        entropy: torch.Tensor,
        grad_logp: torch.Tensor,
        grad_entropy: torch.Tensor,
        inv_temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return design.logprobs_backward(hidden, weight, labels, lse, entropy, grad_logp, grad_entropy, inv_temperature)

    stats.__doc__ = "float32 ``[4, N]``: max, sum-exp, sum-exp * z, target logit over this shard."
    backward.__doc__ = "``(grad_hidden [N, H], grad_weight [V, H])`` in the inputs' dtype (fp32 accumulation)."
    stats_op = torch.library.custom_op(f"r1core::logprobs_stats_{suffix}", stats, mutates_args=())
    backward_op = torch.library.custom_op(f"r1core::logprobs_backward_{suffix}", backward, mutates_args=())

    @stats_op.register_fake
    def _(hidden, weight, labels, inv_temperature, need_entropy):
        kernels.check_dtype(hidden)
        return hidden.new_empty((NUM_STATS, hidden.shape[0]), dtype=torch.float32)

    @backward_op.register_fake
    def _(hidden, weight, labels, lse, entropy, grad_logp, grad_entropy, inv_temperature):
        kernels.check_dtype(hidden)
        return torch.empty_like(hidden), torch.empty_like(weight)

    _backend.register_impl("fused_logprobs", backend, LogprobsImpl(stats_op, backward_op))
    return stats_op, backward_op


logprobs_stats_triton, logprobs_backward_triton = _register("triton", "triton", kernels)
# The second design: same contracts, other kernels (persistent tiles, tensor descriptors).
logprobs_stats_triton_persistent, logprobs_backward_triton_persistent = _register(
    "triton-persistent", "triton_persistent", persistent)
