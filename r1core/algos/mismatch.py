"""Rollout/trainer log-prob mismatch: how far the engine's numbers drift from the trainer's.

The engine and the trainer compute log p(token) with different kernels (and, on GPU,
often different precisions), so the ratio pi_trainer / pi_rollout is not 1 even right
after a sync. Reporting the gap every step catches a broken sync (gap jumps to O(1));
the per-token values feed truncated importance sampling in the loss.
"""

from __future__ import annotations

import torch


def logprob_mismatch(
    rollout_logp: torch.Tensor, trainer_logp: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Max and mean ``|rollout_logp - trainer_logp|`` over the sampled (masked-in) tokens.

    Args:
        rollout_logp: ``[batch, seq]`` float, log-probs the engine returned.
        trainer_logp: ``[batch, seq]`` float, the trainer's log-probs of the same tokens.
        mask: ``[batch, seq]`` bool or 0/1, 1 on response tokens.

    Returns:
        ``{"logprob_mismatch_max", "logprob_mismatch_mean", "num_tokens"}`` as 0-dim tensors on
        the inputs' device (no host sync). Both statistics are 0 when the mask is empty.
        The difference is taken in float32 at least.
    """
    if rollout_logp.shape != trainer_logp.shape or rollout_logp.shape != mask.shape:
        raise ValueError(
            f"shapes differ: rollout {tuple(rollout_logp.shape)}, trainer "
            f"{tuple(trainer_logp.shape)}, mask {tuple(mask.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(rollout_logp.dtype, trainer_logp.dtype),
                                torch.float32)
    keep = mask.to(torch.bool)
    diff = (rollout_logp.to(dtype) - trainer_logp.to(dtype)).abs()
    diff = torch.where(keep, diff, torch.zeros((), dtype=dtype, device=diff.device))
    num_tokens = keep.sum()
    return {
        "logprob_mismatch_max": diff.amax() if diff.numel() else diff.new_zeros(()),
        "logprob_mismatch_mean": diff.sum() / num_tokens.clamp(min=1).to(dtype),
        "num_tokens": num_tokens,
    }
