"""Sampling strategies over a step's :class:`~r1core.batch.RolloutBatch`, configured in the
run's ``algorithm`` section and called by the GRPO trainer.

- :class:`DynamicSampling` (``algorithm.dynamic_sampling``): drop groups with equal
  outcomes, refill from further prompts (DAPO).
- :class:`OverlongRewardShaping`, :class:`OverlongFilter` (``algorithm.overlong``): DAPO's
  overlong remedies.
- :class:`PassRateTracker`, :class:`DifficultyFilter`, :func:`curriculum_order`
  (``algorithm.difficulty``): online pass-rate band filtering and easy-to-hard epochs,
  applied by :class:`PromptStream`.
- :class:`LengthSchedule` (``algorithm.length_schedule``): progressively longer responses.
"""

from r1core.algos.sampling.difficulty import DifficultyConfig, DifficultyFilter, PassRateTracker, curriculum_order
from r1core.algos.sampling.dynamic import (
    DynamicSampling,
    DynamicSamplingConfig,
    DynamicSamplingStats,
    GroupSource,
    informative_groups,
)
from r1core.algos.sampling.length import LengthSchedule
from r1core.algos.sampling.overlong import OverlongConfig, OverlongFilter, OverlongRewardShaping, overlong_penalty
from r1core.algos.sampling.prompts import PromptStream

__all__ = [
    "DifficultyConfig",
    "DifficultyFilter",
    "DynamicSampling",
    "DynamicSamplingConfig",
    "DynamicSamplingStats",
    "GroupSource",
    "LengthSchedule",
    "OverlongConfig",
    "OverlongFilter",
    "OverlongRewardShaping",
    "PassRateTracker",
    "PromptStream",
    "curriculum_order",
    "informative_groups",
    "overlong_penalty",
]
