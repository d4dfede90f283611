"""Overlong handling (DAPO): soft length penalty before the limit, or mask truncated samples.

A response cut off at the length limit gets a low reward for a reason unrelated to its
reasoning (the answer simply was not reached), which is noise in the reward. DAPO offers
two remedies, used alone or together:

- overlong reward shaping: a penalty growing linearly from 0 to ``-penalty`` over the last
  ``buffer_length`` tokens before ``max_length`` (``-penalty`` beyond it);
- overlong filtering: truncated responses get loss weight 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1core.algos.sampling.groups import GroupBatch


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer_length: int, penalty: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong penalty, float32 with ``lengths``' shape.

    0 for ``L <= max_length - buffer_length``; ``(max_length - buffer_length - L) / buffer_length
    * penalty`` inside the buffer; ``-penalty`` for ``L > max_length``.
    """
    if max_length < 1 or not 0 < buffer_length <= max_length:
        raise ValueError(f"need 0 < buffer_length <= max_length, got buffer {buffer_length}, max {max_length}")
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0, got {penalty}")
    expected = max_length - buffer_length
    lengths = lengths.to(torch.float32)
    inside = (expected - lengths) / buffer_length * penalty
    result = torch.where(lengths <= expected, torch.zeros_like(lengths), inside)
    return torch.where(lengths > max_length, torch.full_like(lengths, -penalty), result)


@dataclass(frozen=True)
class OverlongRewardShaping:
    """Adds :func:`overlong_penalty` to the rewards (scores, used for filtering, stay as they are).

    max_length: the generation limit in tokens. buffer_length: width of the soft zone
    before it (DAPO: 4096 of 20480). penalty: the penalty at and beyond the limit.
    """

    max_length: int
    buffer_length: int
    penalty: float = 1.0

    def __post_init__(self) -> None:
        overlong_penalty(torch.zeros(1), self.max_length, self.buffer_length, self.penalty)  # validates

    def __call__(self, batch: GroupBatch) -> GroupBatch:
        shaped = batch.rewards + overlong_penalty(batch.lengths, self.max_length, self.buffer_length, self.penalty)
        # Keep the unshaped outcome for filtering and pass rates.
        scores = batch.scores if batch.scores is not None else batch.rewards
        return batch.with_fields(rewards=shaped, scores=scores)


@dataclass(frozen=True)
class OverlongFilter:
    """Sets the loss weight of truncated responses to 0 (they still count in their group's
    advantage baseline, as in DAPO)."""

    def __call__(self, batch: GroupBatch) -> GroupBatch:
        return batch.with_fields(loss_weight=batch.loss_weight * (~batch.truncated).to(torch.float32))
