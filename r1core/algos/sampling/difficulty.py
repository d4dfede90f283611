"""Difficulty filtering by measured pass rate, and curriculum ordering.

Prompts the policy always solves, or never solves, give zero-variance groups and waste
rollouts. Skywork-OR1 and DeepScaleR measure each prompt's pass rate (offline with the
initial policy, or online from the groups of past steps) and keep prompts whose pass rate
lies in a band; a curriculum orders the kept prompts from easy to hard. The trainer measures
online: every step's groups update a :class:`PassRateTracker`, and the prompt stream
(:class:`r1core.algos.sampling.PromptStream`) applies the filter and the ordering at each
epoch start.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Mapping, Sequence

import torch

from r1core.batch import RolloutBatch


@dataclass(frozen=True)
class DifficultyConfig:
    """Online difficulty filtering and curriculum (``algorithm.difficulty``)."""

    filter: bool = False
    """At each epoch start, drop prompts whose measured pass rate left
    ``(min_pass_rate, max_pass_rate)`` (Skywork-OR1's online filtering)."""
    min_pass_rate: float = 0.0
    """Lower bound of the band (excluded)."""
    max_pass_rate: float = 1.0
    """Upper bound of the band (excluded): the default band drops the always-solved and the
    never-solved prompts."""
    pass_threshold: float = 0.5
    """An outcome (the verifier's score, before shaping) counts as a pass at or above this."""
    pass_rate_decay: float = 0.0
    """0 keeps each prompt's plain mean over every sample seen; a value in (0, 1) makes the
    rate an exponential moving average over the steps that drew it, so it follows the
    improving policy."""
    curriculum: bool = False
    """Order each epoch easy to hard by measured pass rate instead of a plain shuffle."""
    num_buckets: int = 10
    """Pass-rate buckets of the curriculum (shuffled within a bucket)."""

    def __post_init__(self) -> None:
        DifficultyFilter(self.min_pass_rate, self.max_pass_rate)  # validates the band
        if self.num_buckets < 1:
            raise ValueError(f"difficulty.num_buckets must be >= 1, got {self.num_buckets}")
        if not 0.0 <= self.pass_rate_decay < 1.0:
            raise ValueError(f"difficulty.pass_rate_decay must lie in [0, 1), got {self.pass_rate_decay}")

    def tracker(self) -> "PassRateTracker":
        return PassRateTracker(self.pass_threshold, self.pass_rate_decay or None)

    @property
    def enabled(self) -> bool:
        return self.filter or self.curriculum


class PassRateTracker:
    """Running pass rate of each prompt: mean outcome over every response seen for it.

    ``threshold``: an outcome counts as a pass when ``>= threshold`` (outcomes in [0, 1]).
    ``decay``: ``None`` keeps the plain mean over all samples; a value in (0, 1) makes it an
    exponential moving average over updates, so the rate follows the improving policy.
    """

    def __init__(self, threshold: float = 0.5, decay: float | None = None) -> None:
        if decay is not None and not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1) or be None, got {decay}")
        self.threshold = threshold
        self.decay = decay
        self._passes: dict[Hashable, float] = {}
        self._samples: dict[Hashable, float] = {}

    def update(self, batch: RolloutBatch) -> None:
        """Record the outcomes of every group of ``batch`` under its prompt's uid."""
        groups = batch.groups()
        passes = (groups.outcome >= self.threshold).to(torch.float64)
        for uid, row in zip(groups.uids, passes.tolist()):
            self.record(uid, sum(row), len(row))

    def record(self, prompt_id: Hashable, num_passed: float, num_samples: int) -> None:
        if num_samples <= 0:
            return
        if self.decay is None or prompt_id not in self._samples:
            self._passes[prompt_id] = self._passes.get(prompt_id, 0.0) + num_passed
            self._samples[prompt_id] = self._samples.get(prompt_id, 0.0) + num_samples
        else:
            # EMA of the rate, stored as (rate, 1) so pass_rate stays passes / samples.
            rate = self._passes[prompt_id] / self._samples[prompt_id]
            self._passes[prompt_id] = self.decay * rate + (1 - self.decay) * num_passed / num_samples
            self._samples[prompt_id] = 1.0

    def pass_rate(self, prompt_id: Hashable) -> float | None:
        """Measured pass rate, or ``None`` for a prompt never seen."""
        samples = self._samples.get(prompt_id)
        return None if samples is None else self._passes[prompt_id] / samples

    def pass_rates(self) -> dict[Hashable, float]:
        return {key: self._passes[key] / self._samples[key] for key in self._samples}

    def state_dict(self) -> dict[str, Any]:
        """The measured counts, for checkpoints."""
        return {"passes": dict(self._passes), "samples": dict(self._samples)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._passes, self._samples = dict(state["passes"]), dict(state["samples"])


@dataclass(frozen=True)
class DifficultyFilter:
    """Keep prompts whose pass rate lies in ``[min_pass_rate, max_pass_rate]``.

    inclusive: with ``False`` (default) the bounds themselves are excluded, so the default
        band (0, 1) drops exactly the always-solved and never-solved prompts.
    keep_unmeasured: whether prompts without a measured pass rate are kept.
    """

    min_pass_rate: float = 0.0
    max_pass_rate: float = 1.0
    inclusive: bool = False
    keep_unmeasured: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_pass_rate <= self.max_pass_rate <= 1.0:
            raise ValueError(f"need 0 <= min_pass_rate <= max_pass_rate <= 1, got {self.min_pass_rate}, {self.max_pass_rate}")

    def accepts(self, pass_rate: float | None) -> bool:
        if pass_rate is None:
            return self.keep_unmeasured
        if self.inclusive:
            return self.min_pass_rate <= pass_rate <= self.max_pass_rate
        return self.min_pass_rate < pass_rate < self.max_pass_rate

    def select(self, prompt_ids: Iterable[Hashable], pass_rates: Mapping[Hashable, float]) -> list[Hashable]:
        """The prompt ids (in their order) whose pass rate is in the band."""
        return [pid for pid in prompt_ids if self.accepts(pass_rates.get(pid))]


def curriculum_order(
    prompt_ids: Sequence[Hashable],
    pass_rates: Mapping[Hashable, float],
    *,
    seed: int,
    num_buckets: int = 10,
    unmeasured_rate: float = 0.0,
) -> list[Hashable]:
    """Prompt ids ordered easy to hard: by pass-rate bucket (highest first), shuffled
    within a bucket with ``seed`` (same seed, same order).

    ``num_buckets`` sets how coarse the ordering is (1 = a plain shuffle);
    ``unmeasured_rate`` is the pass rate assumed for prompts not in ``pass_rates``.
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    rng = random.Random(seed)
    tiebreak = [rng.random() for _ in prompt_ids]

    def bucket(pid: Hashable) -> int:
        rate = pass_rates.get(pid, unmeasured_rate)
        return min(num_buckets - 1, int(math.floor(rate * num_buckets)))

    order = sorted(range(len(prompt_ids)), key=lambda i: (-bucket(prompt_ids[i]), tiebreak[i]))
    return [prompt_ids[i] for i in order]
