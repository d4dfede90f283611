"""The run's ``data`` section: where the training and held-out problems come from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """Where the prompts come from: a synthetic verifiable task."""

    task: str = "arithmetic"
    """A synthetic task (``arithmetic``, ``countdown``)."""
    difficulty: float = 0.0
    """The task's difficulty knob in [0, 1] (ignored for the fields ``options`` sets)."""
    options: dict[str, float] = field(default_factory=lambda: {"num_terms": 3.0, "max_operand": 5.0})
    """Explicit fields of the task's config (``num_terms``, ``max_operand`` of ``arithmetic``)."""
    num_train: int = 700
    """Training problems (drawn with repetition; the held-out ones are distinct from all)."""
    num_eval: int = 128
    """Held-out problems, disjoint from the training ones."""
    template: str = "compact"
    """Prompt template: ``compact``, ``r1-zero`` or ``chat``."""
    seed: int = 0
    """Seed of problem generation."""
