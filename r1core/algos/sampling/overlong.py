"""Overlong handling (DAPO): a soft length penalty before the limit, or truncated samples
masked out of the loss.

A response cut off at the length limit gets a low reward for a reason unrelated to its
reasoning (the answer simply was not reached), which is noise in the reward. DAPO offers
two remedies, used alone or together:

- overlong reward shaping: a penalty growing linearly from 0 to ``-penalty`` over the last
  ``buffer_length`` tokens before ``max_length`` (``-penalty`` beyond it), the formula of
  :func:`r1core.rewards.length.soft_overlong_penalty`;
- overlong filtering: truncated responses get loss weight 0 (they still count in their
  group's baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1core.batch import RolloutBatch
from r1core.rewards.length import soft_overlong_penalty


@dataclass(frozen=True)
class OverlongConfig:
    """DAPO's overlong remedies (``algorithm.overlong``)."""

    buffer_fraction: float = 0.0
    """Overlong reward shaping: the soft zone as a fraction of the step's generation budget
    (DAPO: 4096 of 20480 tokens, 0.2); 0 turns shaping off."""
    penalty: float = 1.0
    """Shaping penalty at (and beyond) the generation budget."""
    filter: bool = False
    """Overlong filtering: responses that hit the length limit get loss weight 0."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.buffer_fraction <= 1.0:
            raise ValueError(f"overlong.buffer_fraction must lie in [0, 1], got {self.buffer_fraction}")
        if self.penalty < 0:
            raise ValueError(f"overlong.penalty must be >= 0, got {self.penalty}")

    def apply(self, batch: RolloutBatch, max_length: int) -> RolloutBatch:
        """Shaping (when ``buffer_fraction`` > 0) then filtering (when ``filter``), for a
        step whose generation budget is ``max_length`` tokens."""
        if self.buffer_fraction > 0:
            buffer = max(1, round(self.buffer_fraction * max_length))
            batch = OverlongRewardShaping(max_length, buffer, self.penalty)(batch)
        if self.filter:
            batch = OverlongFilter()(batch)
        return batch


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer_length: int, penalty: float = 1.0) -> torch.Tensor:
    """:func:`~r1core.rewards.length.soft_overlong_penalty` of every length, float32 with
    ``lengths``' shape."""
    values = [soft_overlong_penalty(float(n), max_length, buffer_length, penalty) for n in lengths.flatten().tolist()]
    return torch.tensor(values, dtype=torch.float32).view(lengths.shape)


@dataclass(frozen=True)
class OverlongRewardShaping:
    """Adds :func:`overlong_penalty` of the response lengths to the rewards; the unshaped
    outcome is kept in ``scores`` for filtering and pass rates.

    max_length: the generation limit in tokens. buffer_length: width of the soft zone
    before it (DAPO: 4096 of 20480). penalty: the penalty at and beyond the limit.
    """

    max_length: int
    buffer_length: int
    penalty: float = 1.0

    def __post_init__(self) -> None:
        soft_overlong_penalty(0, self.max_length, self.buffer_length, self.penalty)  # validates

    def __call__(self, batch: RolloutBatch) -> RolloutBatch:
        shaped = batch.rewards + overlong_penalty(batch.response_lengths, self.max_length, self.buffer_length, self.penalty)
        return batch.with_fields(rewards=shaped, scores=batch.outcome())


@dataclass(frozen=True)
class OverlongFilter:
    """Sets the loss weight of truncated responses to 0."""

    def __call__(self, batch: RolloutBatch) -> RolloutBatch:
        return batch.with_fields(loss_weights=batch.loss_weights * (~batch.truncated).to(torch.float32))
