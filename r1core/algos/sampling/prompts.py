"""The stream of prompts the trainer draws from, with online difficulty filtering and a
curriculum.

Each epoch the stream re-orders the prompts (a seeded shuffle, or easy-to-hard by measured
pass rate with ``curriculum=True``) after dropping those whose measured pass rate left the
filter's band (Skywork-OR1's online filtering: prompts the policy now always solves stop
costing rollouts). Dynamic sampling's refill callback draws from the same stream, so
refilled groups come from prompts not yet used this epoch.
"""

from __future__ import annotations

import random
from typing import Any, Generic, Hashable, Sequence, TypeVar

from r1core.algos.sampling.difficulty import DifficultyFilter, PassRateTracker, curriculum_order

T = TypeVar("T")


class PromptStream(Generic[T]):
    """Endless, deterministic stream of items (problems) with ids.

    items: the prompts (any objects; ``id_of`` gives each one's id, default ``item.id``).
    seed: fixes every epoch's order (epoch ``e`` uses ``seed + e``).
    tracker: measured pass rates (updated by the trainer); used by ``difficulty_filter``
        and ``curriculum``.
    difficulty_filter: applied at each epoch start; if it would drop every prompt, the
        epoch keeps them all rather than stall (``last_epoch_filtered`` says how many went).
    curriculum: order epochs easy to hard by pass rate (``num_buckets`` buckets) instead of
        a plain shuffle.
    """

    def __init__(
        self,
        items: Sequence[T],
        *,
        seed: int,
        tracker: PassRateTracker | None = None,
        difficulty_filter: DifficultyFilter | None = None,
        curriculum: bool = False,
        num_buckets: int = 10,
        id_of: Any = None,
    ) -> None:
        if not items:
            raise ValueError("a prompt stream needs at least one item")
        if (difficulty_filter is not None or curriculum) and tracker is None:
            raise ValueError("difficulty filtering and curriculum need a PassRateTracker")
        self.id_of = id_of or (lambda item: item.id)
        self.items = {self.id_of(item): item for item in items}
        if len(self.items) != len(items):
            raise ValueError("item ids must be unique")
        self.seed = seed
        self.tracker = tracker
        self.difficulty_filter = difficulty_filter
        self.curriculum = curriculum
        self.num_buckets = num_buckets
        self.epoch = -1
        self.position = 0
        self.order: list[Hashable] = []
        self.last_epoch_filtered = 0

    def _start_epoch(self) -> None:
        self.epoch += 1
        self.position = 0
        ids = list(self.items)
        rates = self.tracker.pass_rates() if self.tracker is not None else {}
        if self.difficulty_filter is not None:
            kept = self.difficulty_filter.select(ids, rates)
            self.last_epoch_filtered = len(ids) - len(kept)
            ids = kept or ids
        if self.curriculum:
            self.order = curriculum_order(ids, rates, seed=self.seed + self.epoch, num_buckets=self.num_buckets)
        else:
            self.order = ids
            random.Random(self.seed + self.epoch).shuffle(self.order)

    def next(self, count: int) -> list[T]:
        """The next ``count`` items; crossing an epoch boundary starts the next epoch."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        out: list[T] = []
        while len(out) < count:
            if self.position >= len(self.order):
                self._start_epoch()
            take = min(count - len(out), len(self.order) - self.position)
            out.extend(self.items[i] for i in self.order[self.position : self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream and the measured pass rates, for checkpoints."""
        state = {"epoch": self.epoch, "position": self.position, "order": list(self.order), "seed": self.seed}
        if self.tracker is not None:
            state["pass_rates"] = self.tracker.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [i for i in state["order"] if i not in self.items]
        if missing:
            raise ValueError(f"checkpointed prompt order has ids not in this stream, e.g. {missing[:3]}")
        self.epoch, self.position, self.order, self.seed = state["epoch"], state["position"], list(state["order"]), state["seed"]
        if self.tracker is not None and "pass_rates" in state:
            self.tracker.load_state_dict(state["pass_rates"])
