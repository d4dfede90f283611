"""The run's ``reward`` section: which rewards, their weights, and the worker pool."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RewardConfig:
    """Rule-based rewards, weighted and scored in a worker pool."""

    weights: dict[str, float] = field(default_factory=lambda: {"math_accuracy": 1.0, "r1_format": 0.1})
    """Registered reward name -> weight."""
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Registered reward name -> its config fields, e.g.
    ``{code_execution: {sandbox: {wall_timeout_s: 5}}}``."""
    num_workers: int = 2
    """Reward worker processes."""
    sample_timeout_s: float = 10.0
    """Per-sample budget (a reward that declares it needs more, such as code execution with
    several test cases, gets what it declares); a sample over it scores 0 with the reason
    logged."""

    def __post_init__(self) -> None:
        from r1core.rewards.registry import list_rewards

        if not self.weights:
            raise ValueError("reward.weights is empty: name at least one reward (e.g. math_accuracy: 1.0)")
        known = list_rewards()
        for name, weight in self.weights.items():
            if name not in known:
                raise ValueError(f"reward.weights.{name}: unknown reward; valid: {', '.join(known)}")
            if not math.isfinite(weight):
                raise ValueError(f"reward.weights.{name} must be a finite number, got {weight}")
        if self.num_workers < 1:
            raise ValueError(f"reward.num_workers must be >= 1 (worker processes that score), got {self.num_workers}")
        if not self.sample_timeout_s > 0:
            raise ValueError(f"reward.sample_timeout_s must be > 0, got {self.sample_timeout_s}")
