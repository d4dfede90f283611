"""The run's ``reward`` section: which rewards, their weights, and the worker pool."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RewardConfig:
    """Rule-based rewards, weighted and scored in a worker pool."""

    weights: dict[str, float] = field(default_factory=lambda: {"math_accuracy": 1.0, "r1_format": 0.1})
    """Registered reward name -> weight."""
    num_workers: int = 2
    """Reward worker processes."""
    sample_timeout_s: float = 10.0
    """Per-sample budget; a sample over it scores 0 with the reason logged."""
