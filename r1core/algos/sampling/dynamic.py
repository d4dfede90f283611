"""Dynamic sampling (DAPO): keep only groups whose outcomes differ, refill from new prompts.

A group whose responses all score the same has zero advantage under every group-relative
estimator, so it contributes no gradient but still costs a slot of the batch. Dynamic
sampling drops such groups and asks the caller's source for more until the batch holds
``target_num_groups`` informative groups or ``max_refill_rounds`` refills have been made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from r1core.batch import RolloutBatch

# The trainer's "sample more": given the refill round (1, 2, ...), generate and score a
# fresh batch of groups. An empty batch means the source is exhausted.
GroupSource = Callable[[int], RolloutBatch]


@dataclass(frozen=True)
class DynamicSamplingConfig:
    """DAPO's dynamic sampling (``algorithm.dynamic_sampling``)."""

    enabled: bool = False
    """Drop groups whose outcomes are all equal and refill from further prompts."""
    max_refill_rounds: int = 3
    """Extra generation rounds per step at most; a step that still falls short trains on the
    informative groups it has."""
    min_spread: float = 0.0
    """A group is informative when ``max - min`` of its outcomes exceeds this."""

    def __post_init__(self) -> None:
        if self.max_refill_rounds < 0:
            raise ValueError(f"dynamic_sampling.max_refill_rounds must be >= 0, got {self.max_refill_rounds}")
        if self.min_spread < 0:
            raise ValueError(f"dynamic_sampling.min_spread must be >= 0, got {self.min_spread}")


@dataclass(frozen=True)
class DynamicSamplingStats:
    """rounds: generation rounds used (the first included). num_dropped: groups dropped for
    equal outcomes. num_kept: informative groups kept (before any truncation to the target).
    """

    rounds: int
    num_dropped: int
    num_kept: int

    def as_metrics(self) -> dict[str, float]:
        return {"dynamic_sampling/rounds": float(self.rounds),
                "dynamic_sampling/groups_dropped": float(self.num_dropped),
                "dynamic_sampling/groups_kept": float(self.num_kept)}


def informative_groups(batch: RolloutBatch, min_spread: float = 0.0) -> torch.Tensor:
    """bool ``[G]``: True for groups whose outcomes are not all equal (spread > min_spread)."""
    outcome = batch.groups().outcome
    spread = outcome.amax(dim=1) - outcome.amin(dim=1)
    return spread > min_spread


class DynamicSampling:
    """Filter-and-refill; deterministic given the source (it draws no randomness itself).

    ``target_num_groups`` is counted over the whole run's batch: with data parallelism each
    replica passes ``total``, a function from its own kept count to the sum over replicas (a
    collective, so every replica runs the same number of rounds).
    """

    def __init__(self, config: DynamicSamplingConfig, target_num_groups: int) -> None:
        if target_num_groups < 1:
            raise ValueError(f"target_num_groups must be >= 1, got {target_num_groups}")
        self.config = config
        self.target_num_groups = target_num_groups

    def filter(self, batch: RolloutBatch) -> tuple[RolloutBatch, int]:
        """The informative groups of ``batch`` and how many were dropped."""
        keep = informative_groups(batch, self.config.min_spread).nonzero().flatten().tolist()
        return batch.take_groups(keep), batch.num_groups - len(keep)

    def run(
        self, batch: RolloutBatch, source: GroupSource, *, total: Callable[[int], int] = int
    ) -> tuple[RolloutBatch, DynamicSamplingStats]:
        """Filter ``batch``, then refill from ``source`` until ``total(kept)`` reaches the
        target or the round cap.

        Returns every kept group in generation order (a surplus beyond the target is the
        caller's to trim, see :meth:`truncate`) and the stats.
        """
        kept, dropped = self.filter(batch)
        parts, rounds = [kept], 1
        while total(sum(p.num_groups for p in parts)) < self.target_num_groups and rounds <= self.config.max_refill_rounds:
            fresh = source(rounds)
            rounds += 1
            if fresh.num_groups and fresh.group_size != batch.group_size:
                raise ValueError(f"source returned groups of size {fresh.group_size}, expected {batch.group_size}")
            fresh_kept, fresh_dropped = self.filter(fresh)
            parts.append(fresh_kept)
            dropped += fresh_dropped
        result = RolloutBatch.concat(parts)
        return result, DynamicSamplingStats(rounds, dropped, result.num_groups)

    def truncate(self, batch: RolloutBatch) -> RolloutBatch:
        """The first ``target_num_groups`` groups of ``batch`` (all of them if fewer)."""
        return batch.take_groups(range(min(batch.num_groups, self.target_num_groups)))
