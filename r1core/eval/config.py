"""The run's ``eval`` section: held-out evaluation during training and ``r1core eval``."""

from __future__ import annotations

from dataclasses import dataclass

from r1core.data.benchmarks import parse_benchmark_name


@dataclass
class EvalConfig:
    """Held-out evaluation: ``k`` samples per problem; avg@k is R1's pass@1."""

    every: int = 10
    """Evaluate every this many RL steps (and before the first and after the last)."""
    k: int = 4
    """Samples per problem."""
    temperature: float = 1.0
    """Sampling temperature (0: greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = 48
    """Generation budget per sample."""
    benchmark: str = ""
    """``r1core eval``: a shipped benchmark (``gsm8k``, ``math500``, ``aime24``, ``amc23``, or
    ``name:split``) or a jsonl/parquet file read with ``data.fields`` and
    ``data.answer_format``."""
    split: str = "test"
    """``r1core eval``: the benchmark split when ``benchmark`` names none."""
    limit: int = 0
    """``r1core eval``: evaluate only the first ``limit`` problems (0: all)."""
    samples: bool = True
    """``r1core eval``: write every sample (prompt, response, extracted answer, score) to
    ``samples.jsonl`` beside ``eval.json``."""

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"eval.every must be >= 1, got {self.every}")
        if self.k < 1:
            raise ValueError(f"eval.k must be >= 1, got {self.k}")
        if self.max_tokens < 1:
            raise ValueError(f"eval.max_tokens must be >= 1, got {self.max_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"eval.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"eval.top_p must lie in (0, 1], got {self.top_p}")
        if self.limit < 0:
            raise ValueError(f"eval.limit must be >= 0 (0: all problems), got {self.limit}")
        if self.benchmark:
            try:
                parse_benchmark_name(self.benchmark, self.split)
            except ValueError as error:
                raise ValueError(f"eval.benchmark: {error}") from None

    def benchmark_entry(self) -> str:
        """``benchmark`` with ``split`` made explicit for a benchmark name (files unchanged)."""
        named = parse_benchmark_name(self.benchmark, self.split)
        return self.benchmark if named is None else f"{named[0]}:{named[1]}"
