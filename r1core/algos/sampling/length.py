"""Progressively longer maximum response length (DeepScaleR: 8k -> 16k -> 24k).

Short contexts early make rollouts cheap while the policy learns to reason concisely;
the limit grows once responses start to be truncated.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class LengthSchedule:
    """``stages``: ``(start_step, max_length)`` pairs; the first must start at step 0, steps
    strictly increase and lengths never decrease."""

    stages: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        stages = tuple((int(step), int(length)) for step, length in self.stages)
        if not stages or stages[0][0] != 0:
            raise ValueError(f"the first stage must start at step 0, got {stages}")
        for (step_a, length_a), (step_b, length_b) in zip(stages, stages[1:]):
            if step_b <= step_a:
                raise ValueError(f"stage steps must strictly increase, got {step_a} then {step_b}")
            if length_b < length_a:
                raise ValueError(f"max lengths must not decrease, got {length_a} then {length_b}")
        if any(length < 1 for _, length in stages):
            raise ValueError(f"max lengths must be >= 1, got {stages}")
        object.__setattr__(self, "stages", stages)

    @classmethod
    def constant(cls, max_length: int) -> "LengthSchedule":
        return cls(((0, max_length),))

    @classmethod
    def parse(cls, text: str) -> "LengthSchedule":
        """From ``"0:8192,1000:16384,2000:24576"``."""
        try:
            pairs = [tuple(int(x) for x in part.split(":")) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"cannot parse length schedule {text!r}; expected 'step:length,step:length'") from None
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"cannot parse length schedule {text!r}; expected 'step:length,step:length'")
        return cls(tuple(pairs))  # type: ignore[arg-type]

    def __call__(self, step: int) -> int:
        """The maximum response length at training step ``step`` (>= 0)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        index = bisect.bisect_right([s for s, _ in self.stages], step) - 1
        return self.stages[index][1]

    @property
    def final_length(self) -> int:
        return self.stages[-1][1]
