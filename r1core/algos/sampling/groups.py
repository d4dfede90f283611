"""The batch of rollout groups the sampling strategies operate on.

A group is the set of responses sampled for one prompt. Strategies read and return
:class:`GroupBatch` objects and never mutate their input; the trainer keeps its own token
tensors aligned by carrying them in :attr:`GroupBatch.extras` (indexed along the group
axis) or by applying :meth:`GroupBatch.take`'s indices itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch


@dataclass(frozen=True)
class GroupBatch:
    """``G`` groups of ``n`` responses each.

    prompt_ids: ``G`` hashable prompt identifiers.
    rewards: float32 ``[G, n]`` rewards that feed the advantages (shaping edits these).
    lengths: int64 ``[G, n]`` response lengths in tokens.
    truncated: bool ``[G, n]``, True where generation hit the length limit.
    scores: optional float32 ``[G, n]`` outcome scores (e.g. verifier correctness) used for
        filtering and pass rates; :meth:`outcome` falls back to ``rewards``.
    loss_weight: float32 ``[G, n]`` per-response weight in the loss (overlong filtering
        sets 0); the trainer multiplies each response's token mask by it. Default ones.
    extras: per-group payloads (lists of length ``G`` or tensors with leading dim ``G``),
        carried through :meth:`take` and :meth:`concat`.
    """

    prompt_ids: list[Any]
    rewards: torch.Tensor
    lengths: torch.Tensor
    truncated: torch.Tensor
    scores: torch.Tensor | None = None
    loss_weight: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rewards.dim() != 2:
            raise ValueError(f"rewards must be [G, n], got shape {tuple(self.rewards.shape)}")
        shape = self.rewards.shape
        if len(self.prompt_ids) != shape[0]:
            raise ValueError(f"{len(self.prompt_ids)} prompt_ids for {shape[0]} groups of rewards")
        for name in ("lengths", "truncated", "scores", "loss_weight"):
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise ValueError(f"{name} must have rewards' shape {tuple(shape)}, got {tuple(value.shape)}")
        for name, value in self.extras.items():
            if len(value) != shape[0]:
                raise ValueError(f"extras[{name!r}] has {len(value)} entries for {shape[0]} groups")
        object.__setattr__(self, "rewards", self.rewards.to(torch.float32))
        object.__setattr__(self, "truncated", self.truncated.to(torch.bool))
        if self.loss_weight is None:
            object.__setattr__(self, "loss_weight", torch.ones_like(self.rewards))

    @property
    def num_groups(self) -> int:
        return self.rewards.shape[0]

    @property
    def group_size(self) -> int:
        return self.rewards.shape[1]

    def outcome(self) -> torch.Tensor:
        """float32 ``[G, n]``: ``scores`` when given, else ``rewards``."""
        return (self.scores if self.scores is not None else self.rewards).to(torch.float32)

    def with_fields(self, **changes: Any) -> "GroupBatch":
        """A copy with the given fields replaced (the input is left as it was)."""
        return replace(self, **changes)

    def take(self, indices: Sequence[int] | torch.Tensor) -> "GroupBatch":
        """The groups at ``indices`` (in that order)."""
        index = torch.as_tensor(list(indices) if not torch.is_tensor(indices) else indices, dtype=torch.long)
        positions = index.tolist()
        extras = {
            name: value[index] if torch.is_tensor(value) else [value[i] for i in positions]
            for name, value in self.extras.items()
        }
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return GroupBatch(
            [self.prompt_ids[i] for i in positions], self.rewards[index], self.lengths[index],
            self.truncated[index], pick(self.scores), pick(self.loss_weight), extras,
        )

    @staticmethod
    def concat(batches: Sequence["GroupBatch"]) -> "GroupBatch":
        """Groups of all ``batches`` in order (all must share the group size and fields)."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        sizes = {b.group_size for b in batches}
        if len(sizes) > 1:
            raise ValueError(f"cannot concat batches of different group sizes {sorted(sizes)}")
        if len({b.scores is None for b in batches}) > 1:
            raise ValueError("cannot concat batches where only some have scores")
        keys = {frozenset(b.extras) for b in batches}
        if len(keys) > 1:
            raise ValueError("cannot concat batches with different extras keys")
        cat = lambda name: torch.cat([getattr(b, name) for b in batches])  # noqa: E731
        extras = {}
        for name in batches[0].extras:
            values = [b.extras[name] for b in batches]
            extras[name] = torch.cat(values) if torch.is_tensor(values[0]) else [x for v in values for x in v]
        return GroupBatch(
            [p for b in batches for p in b.prompt_ids], cat("rewards"), cat("lengths"), cat("truncated"),
            cat("scores") if batches[0].scores is not None else None, cat("loss_weight"), extras,
        )


BatchTransform = Callable[[GroupBatch], GroupBatch]


class Compose:
    """Apply batch transforms in order: ``Compose([OverlongRewardShaping(...), OverlongFilter()])``."""

    def __init__(self, transforms: Sequence[BatchTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, batch: GroupBatch) -> GroupBatch:
        for transform in self.transforms:
            batch = transform(batch)
        return batch
