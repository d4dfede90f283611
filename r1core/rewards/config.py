"""The run's ``reward`` section: which rewards, their weights, and the worker pool."""

from __future__ import annotations

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
