"""Sampling strategies: small, pure objects over a batch of rollout groups.

- :class:`DynamicSampling`: drop groups with equal outcomes, refill from a prompt source.
- :class:`OverlongRewardShaping`, :class:`OverlongFilter`: DAPO's overlong remedies.
- :class:`DifficultyFilter`, :class:`PassRateTracker`, :func:`curriculum_order`: pass-rate
  band filtering and easy-to-hard ordering.
- :class:`LengthSchedule`: progressively longer maximum response length.
- :class:`PromptStream`: the seeded, resumable prompt order with online filtering.
"""

from r1core.algos.sampling.difficulty import DifficultyFilter, PassRateTracker, curriculum_order
from r1core.algos.sampling.dynamic import (
    DynamicSampling,
    DynamicSamplingConfig,
    DynamicSamplingStats,
    GroupSource,
    informative_groups,
)
from r1core.algos.sampling.groups import BatchTransform, Compose, GroupBatch
from r1core.algos.sampling.length import LengthSchedule
from r1core.algos.sampling.prompts import PromptStream
from r1core.algos.sampling.overlong import OverlongFilter, OverlongRewardShaping, overlong_penalty

__all__ = [
    "BatchTransform",
    "Compose",
    "DifficultyFilter",
    "DynamicSampling",
    "DynamicSamplingConfig",
    "DynamicSamplingStats",
    "GroupBatch",
    "GroupSource",
    "LengthSchedule",
    "OverlongFilter",
    "OverlongRewardShaping",
    "PassRateTracker",
    "PromptStream",
    "curriculum_order",
    "informative_groups",
    "overlong_penalty",
]
