"""Dynamic sampling (DAPO): keep only groups whose outcomes differ, refill from new prompts.

A group whose responses all score the same has zero advantage under every group-relative
estimator, so it contributes no gradient but still costs a slot of the batch. Dynamic
sampling drops such groups and asks the caller's prompt source for more until the batch
holds ``target_num_groups`` informative groups or ``max_tries`` refills have been made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from r1core.algos.sampling.groups import GroupBatch

# The trainer's "sample more": given how many groups are still missing, generate (at least
# about) that many new groups and return them; an empty batch means the source is exhausted.
GroupSource = Callable[[int], GroupBatch]


@dataclass(frozen=True)
class DynamicSamplingConfig:
    """target_num_groups: informative groups wanted in the training batch.
    max_tries: most calls to the source for refills (0 = only filter the first batch).
    min_spread: a group is informative when ``max - min`` of its outcomes exceeds this.
    """

    target_num_groups: int
    max_tries: int = 8
    min_spread: float = 0.0

    def __post_init__(self) -> None:
        if self.target_num_groups < 1:
            raise ValueError(f"target_num_groups must be >= 1, got {self.target_num_groups}")
        if self.max_tries < 0:
            raise ValueError(f"max_tries must be >= 0, got {self.max_tries}")
        if self.min_spread < 0:
            raise ValueError(f"min_spread must be >= 0, got {self.min_spread}")


@dataclass(frozen=True)
class DynamicSamplingStats:
    """num_tries: refill calls made to the source. num_generated: groups seen in total
    (first batch included). num_dropped: groups dropped for equal outcomes. num_surplus:
    informative groups beyond the target, discarded. reached_target: whether the returned
    batch has ``target_num_groups`` groups. exhausted: the source returned an empty batch.
    """

    num_tries: int
    num_generated: int
    num_dropped: int
    num_surplus: int
    reached_target: bool
    exhausted: bool

    def as_metrics(self) -> dict[str, float]:
        return {f"dynamic_sampling/{key}": float(value) for key, value in self.__dict__.items()}


def informative_groups(batch: GroupBatch, min_spread: float = 0.0) -> torch.Tensor:
    """bool ``[G]``: True for groups whose outcomes are not all equal (spread > min_spread)."""
    outcome = batch.outcome()
    if outcome.shape[1] == 0:
        return torch.zeros(outcome.shape[0], dtype=torch.bool)
    spread = outcome.amax(dim=1) - outcome.amin(dim=1)
    return spread > min_spread


class DynamicSampling:
    """Filter-and-refill; deterministic given the source (it draws no randomness itself)."""

    def __init__(self, config: DynamicSamplingConfig) -> None:
        self.config = config

    def filter(self, batch: GroupBatch) -> tuple[GroupBatch, int]:
        """The informative groups of ``batch`` and how many were dropped."""
        keep = informative_groups(batch, self.config.min_spread)
        kept = keep.nonzero().flatten()
        return batch.take(kept), batch.num_groups - kept.numel()

    def run(self, batch: GroupBatch, source: GroupSource) -> tuple[GroupBatch, DynamicSamplingStats]:
        """Filter ``batch``, then refill from ``source`` until the target or the try cap.

        Returns the kept groups (at most ``target_num_groups``, in generation order) and
        the stats. Falling short of the target is not an error: the caller decides
        (``stats.reached_target``) whether to train on a smaller batch.
        """
        target = self.config.target_num_groups
        kept, dropped = self.filter(batch)
        parts, num_kept, generated = [kept], kept.num_groups, batch.num_groups
        tries, exhausted = 0, False
        while num_kept < target and tries < self.config.max_tries:
            fresh = source(target - num_kept)
            tries += 1
            if fresh.num_groups == 0:
                exhausted = True
                break
            if fresh.group_size != batch.group_size:
                raise ValueError(f"source returned groups of size {fresh.group_size}, expected {batch.group_size}")
            generated += fresh.num_groups
            fresh_kept, fresh_dropped = self.filter(fresh)
            dropped += fresh_dropped
            parts.append(fresh_kept)
            num_kept += fresh_kept.num_groups
        result = GroupBatch.concat(parts)
        surplus = max(0, result.num_groups - target)
        if surplus:
            result = result.take(range(target))
        stats = DynamicSamplingStats(tries, generated, dropped, surplus, result.num_groups == target, exhausted)
        return result, stats
