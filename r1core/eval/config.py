"""The run's ``eval`` section: held-out evaluation during training and ``r1core eval``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    """Held-out evaluation: ``k`` samples per problem; avg@k is R1's pass@1."""

    every: int = 10
    """Evaluate every this many RL steps (and before the first and after the last)."""
    k: int = 4
    """Samples per problem."""
    temperature: float = 1.0
    """Sampling temperature."""
    max_tokens: int = 48
    """Generation budget per sample."""
    benchmark: str = ""
    """``r1core eval``: a shared benchmark (``gsm8k``, ``math500``, ``aime24``, ``amc23``) or
    a jsonl/parquet file with ``problem`` and ``answer`` fields."""
    split: str = "test"
    """``r1core eval``: the benchmark split."""
    limit: int = 0
    """``r1core eval``: evaluate only the first ``limit`` problems (0: all)."""
