"""The two records of a training step's data path.

- :class:`RolloutBatch`: every sample of one step, from generation to the update. Rows are
  flat and group-major: the ``group_size`` responses to group ``g`` are rows
  ``g * group_size .. (g + 1) * group_size - 1``; :meth:`RolloutBatch.groups` views the
  per-row values as ``[G, group_size]``. Sampling strategies (``r1core.algos.sampling``)
  take one and return a new one.
- :class:`MicroBatch`: one forward/backward's share of it, in the layout the policy
  returns log-probs in, which is what ``Policy.train_step`` and the losses read.

Two layouts of per-token values appear, and every name says which:

- *response-aligned* ``[B, R]``: column ``j`` is response token ``j`` (right-padded to the
  longest response ``R``); advantages are kept this way in a :class:`RolloutBatch`.
- *sequence-aligned* ``[B, W]`` with ``W = longest prompt + response - 1``: column ``t`` is
  the log-prob of token ``t + 1`` given tokens ``0..t``, as the policy returns it, so
  response token ``j`` of a sample with a ``P``-token prompt sits at column ``P - 1 + j``.
  Every tensor of a :class:`MicroBatch` is sequence-aligned.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Hashable, Sequence

import torch


@dataclass(frozen=True)
class Prompt:
    """A tokenised training prompt with its verifiable answer; ``uid`` identifies it across
    steps (pass rates, logs, the checkpointed data order)."""

    tokens: list[int]
    gold: str
    uid: Hashable


@dataclass(frozen=True)
class GroupView:
    """Per-row values of a :class:`RolloutBatch` as ``[G, n]`` views (no copies).

    rewards: float32, what the advantages are computed from (shaping edits these).
    outcome: float32, the verifiable outcome (``scores`` if the batch has them, else
        ``rewards``): what filtering and pass rates look at.
    lengths: int64 response lengths; truncated: bool; loss_weights: float32.
    """

    uids: list[Hashable]
    rewards: torch.Tensor
    outcome: torch.Tensor
    lengths: torch.Tensor
    truncated: torch.Tensor
    loss_weights: torch.Tensor


@dataclass(frozen=True)
class RolloutBatch:
    """``G`` groups of ``group_size`` sampled responses, flat (``B = G * group_size`` rows).

    Per group (length ``G``):
        prompt_tokens: token ids of the prompt.
        uids: the prompt's identity in the dataset (pass-rate tracking, logs).
        golds: the verifiable answer.
        group_index: int64 ``[G]``, the group's number within the step's global batch
            (generation order over every data-parallel replica and refill round).
    Per row (length ``B``):
        response_tokens: token ids of the response.
        rollout_logp: float32 1-D tensors, the engine's log-prob of each sampled token
            (after temperature), response-aligned.
        rewards: float32 ``[B]``, the reward the advantages are computed from.
        scores: float32 ``[B]`` or None, the unshaped outcome (see :meth:`outcome`).
        components: name -> float32 ``[B]``, each reward function's unweighted score.
        truncated: bool ``[B]``, generation stopped at the length limit.
        loss_weights: float32 ``[B]``, a response's weight in the loss (0 drops it).
        advantages: float32 ``[B, R]`` response-aligned, once computed.
        routes: per row, the MoE experts the engine chose (rollout routing replay), or None.
    """

    group_size: int
    prompt_tokens: list[list[int]]
    uids: list[Hashable]
    golds: list[str]
    group_index: torch.Tensor
    response_tokens: list[list[int]]
    rollout_logp: list[torch.Tensor]
    rewards: torch.Tensor
    truncated: torch.Tensor
    scores: torch.Tensor | None = None
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    loss_weights: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    routes: list[Any] | None = None

    def __post_init__(self) -> None:
        size, num_groups = self.group_size, len(self.prompt_tokens)
        if size < 1:
            raise ValueError(f"group_size must be >= 1, got {size}")
        for name in ("uids", "golds", "group_index"):
            if len(getattr(self, name)) != num_groups:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {num_groups} groups")
        rows = num_groups * size
        per_row = {"response_tokens": self.response_tokens, "rollout_logp": self.rollout_logp,
                   "rewards": self.rewards, "truncated": self.truncated, "scores": self.scores,
                   "loss_weights": self.loss_weights, "advantages": self.advantages, "routes": self.routes,
                   **{f"components[{k!r}]": v for k, v in self.components.items()}}
        for name, value in per_row.items():
            if value is not None and len(value) != rows:
                raise ValueError(f"{name} has {len(value)} rows for {num_groups} groups of {size}")
        if self.loss_weights is None:
            object.__setattr__(self, "loss_weights", torch.ones(rows))

    # ------------------------------------------------------------------ shape

    def __len__(self) -> int:
        return len(self.response_tokens)

    @property
    def num_groups(self) -> int:
        return len(self.prompt_tokens)

    def row_group(self, row: int) -> int:
        """The group (position in this batch) that row ``row`` belongs to."""
        return row // self.group_size

    @property
    def response_lengths(self) -> torch.Tensor:
        """int64 ``[B]``."""
        return torch.tensor([len(r) for r in self.response_tokens], dtype=torch.long)

    @property
    def prompt_lengths(self) -> list[int]:
        """Per row."""
        return [len(self.prompt_tokens[self.row_group(row)]) for row in range(len(self))]

    def outcome(self) -> torch.Tensor:
        """float32 ``[B]``: ``scores`` when set (the verifier's outcome before shaping), else
        ``rewards``."""
        return self.scores if self.scores is not None else self.rewards

    def groups(self) -> GroupView:
        """The per-row values as ``[G, group_size]`` views."""
        shape = (self.num_groups, self.group_size)
        return GroupView(
            list(self.uids), self.rewards.view(shape), self.outcome().view(shape),
            self.response_lengths.view(shape), self.truncated.view(shape), self.loss_weights.view(shape),
        )

    def sequences(self, rows: Sequence[int] | None = None) -> list[torch.Tensor]:
        """``prompt + response`` int64 tensors of ``rows`` (all by default)."""
        rows = range(len(self)) if rows is None else rows
        return [torch.tensor(self.prompt_tokens[self.row_group(r)] + self.response_tokens[r], dtype=torch.long)
                for r in rows]

    def response_mask(self) -> torch.Tensor:
        """bool ``[B, R]``, response-aligned: True on response tokens."""
        lengths = self.response_lengths
        width = int(lengths.max()) if len(self) else 0
        return torch.arange(width)[None, :] < lengths[:, None]

    # ------------------------------------------------------------------ new batches

    def with_fields(self, **changes: Any) -> "RolloutBatch":
        """A copy with the given fields replaced (this batch is left as it is)."""
        return replace(self, **changes)

    def take_groups(self, groups: Sequence[int]) -> "RolloutBatch":
        """The groups at positions ``groups`` (in that order), with all their rows."""
        groups = [int(g) for g in groups]
        rows = [g * self.group_size + i for g in groups for i in range(self.group_size)]
        index = torch.as_tensor(rows, dtype=torch.long)
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        advantages = self.advantages
        if advantages is not None:
            width = int(self.response_lengths[index].max()) if rows else 0
            advantages = advantages[index, :width]
        return RolloutBatch(
            self.group_size, [self.prompt_tokens[g] for g in groups], [self.uids[g] for g in groups],
            [self.golds[g] for g in groups], self.group_index[torch.as_tensor(groups, dtype=torch.long)],
            [self.response_tokens[r] for r in rows], [self.rollout_logp[r] for r in rows],
            self.rewards[index], self.truncated[index], pick(self.scores),
            {k: v[index] for k, v in self.components.items()}, self.loss_weights[index], advantages,
            None if self.routes is None else [self.routes[r] for r in rows],
        )

    @staticmethod
    def concat(batches: Sequence["RolloutBatch"]) -> "RolloutBatch":
        """The groups of every batch, in order (same group size and the same optional fields;
        empty batches are skipped)."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        batches = [b for b in batches if b.num_groups] or list(batches[:1])
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        if len({b.group_size for b in batches}) > 1:
            raise ValueError(f"cannot concat batches of group sizes {sorted({b.group_size for b in batches})}")
        for name in ("scores", "advantages", "routes"):
            if len({getattr(b, name) is None for b in batches}) > 1:
                raise ValueError(f"cannot concat batches where only some have {name}")
        if len({frozenset(b.components) for b in batches}) > 1:
            raise ValueError("cannot concat batches with different reward components")
        joined: dict[str, Any] = {"group_size": first.group_size}
        for spec in fields(RolloutBatch):
            name = spec.name
            values = [getattr(b, name) for b in batches]
            if name == "group_size":
                continue
            if values[0] is None:
                joined[name] = None
            elif name == "components":
                joined[name] = {k: torch.cat([v[k] for v in values]) for k in values[0]}
            elif name == "advantages":
                width = max(v.shape[1] for v in values)
                joined[name] = torch.cat([torch.nn.functional.pad(v, (0, width - v.shape[1])) for v in values])
            elif torch.is_tensor(values[0]):
                joined[name] = torch.cat(values)
            else:
                joined[name] = [item for value in values for item in value]
        return RolloutBatch(**joined)


@dataclass
class MicroBatch:
    """The samples of one forward/backward, sequence-aligned (see the module docstring).

    input_ids: ``B`` 1-D int64 tensors, prompt + response (the policy packs them without
        padding).
    mask: float32 ``[B, W]``, ``W`` the longest sequence minus one: each log-prob's weight in
        the loss; 0 on prompt tokens and padding, a response's loss weight on its tokens.
    loss_scale: this micro-batch's share of the optimiser step's global batch
        (``r1core.trainer.loss_scale``); the loss function multiplies its loss by it.
    advantages, rollout_logp, old_logp, ref_logp: float32 ``[B, W]``, or None when the
        step does not use them (SFT uses none; ``old_logp`` is None for an on-policy update).
    routes: per sample (same order as ``input_ids``), the MoE experts the rollout engine chose
        (rollout routing replay): an integer tensor ``[positions, num_moe_layers, top_k]`` of
        global expert indices, row ``t`` for token ``t`` of prompt + response (the engine never
        runs a sample's last token, so ``positions`` is its length minus one; ``-1`` entries and
        missing rows route freely), as ``RolloutSample.routes`` gives it. ``Policy.train_step``
        packs them like the sequences and replays them; None routes freely.
    """

    input_ids: list[torch.Tensor]
    mask: torch.Tensor
    loss_scale: float = 1.0
    advantages: torch.Tensor | None = None
    rollout_logp: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    routes: Sequence[torch.Tensor] | None = None

    @property
    def num_samples(self) -> int:
        return len(self.input_ids)


# ---------------------------------------------------------------------- layouts


def sequence_width(prompt_lengths: Sequence[int], response_lengths: Sequence[int]) -> int:
    """``W``: the longest ``prompt + response`` minus one (the policy's output width)."""
    return max(p + n for p, n in zip(prompt_lengths, response_lengths)) - 1


def response_positions(prompt_lengths: Sequence[int], response_lengths: Sequence[int], width: int) -> torch.Tensor:
    """bool ``[B, width]``, sequence-aligned: True at the columns of response tokens."""
    columns = torch.arange(width)[None, :]
    start = torch.as_tensor(list(prompt_lengths))[:, None] - 1
    stop = start + torch.as_tensor(list(response_lengths))[:, None]
    return (columns >= start) & (columns < stop)


def to_sequence_aligned(values: Sequence[torch.Tensor], prompt_lengths: Sequence[int], width: int) -> torch.Tensor:
    """float32 ``[B, width]``: response-aligned ``values[b]`` placed at columns
    ``prompt_len - 1 + j`` (zeros elsewhere)."""
    out = torch.zeros(len(values), width, dtype=torch.float32)
    for row, (value, prompt_len) in enumerate(zip(values, prompt_lengths)):
        out[row, prompt_len - 1 : prompt_len - 1 + value.numel()] = value.float()
    return out


def to_response_aligned(per_position: torch.Tensor, prompt_lengths: Sequence[int],
                        response_lengths: Sequence[int]) -> list[torch.Tensor]:
    """Inverse of :func:`to_sequence_aligned`: each row's response values from ``[B, W]``."""
    return [per_position[row, p - 1 : p - 1 + n].clone()
            for row, (p, n) in enumerate(zip(prompt_lengths, response_lengths))]


def sft_micro_batch(examples: Sequence[tuple[list[int], list[int]]]) -> MicroBatch:
    """A :class:`MicroBatch` of ``(prompt_ids, response_ids)`` pairs whose mask covers the
    response tokens (the prompt is context only)."""
    prompt_lengths = [len(p) for p, _ in examples]
    response_lengths = [len(r) for _, r in examples]
    width = sequence_width(prompt_lengths, response_lengths)
    return MicroBatch([torch.tensor(p + r, dtype=torch.long) for p, r in examples],
                      response_positions(prompt_lengths, response_lengths, width).float())


def micro_batch_chunks(lengths: Sequence[int], max_samples: int, max_tokens: int = 0) -> list[list[int]]:
    """Positions ``0..len(lengths)-1`` split, in order, into micro-batches.

    Each chunk holds at most ``max_samples`` samples and, when ``max_tokens`` > 0, at most
    ``max_tokens`` tokens (``lengths`` are each sample's prompt + response tokens); a sample
    longer than ``max_tokens`` is a chunk of its own. Packing by tokens keeps the work of a
    forward/backward even when response lengths vary tenfold, as they do in R1 runs.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    chunks: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for index, length in enumerate(lengths):
        over = max_tokens > 0 and current and tokens + length > max_tokens
        if len(current) == max_samples or over:
            chunks.append(current)
            current, tokens = [], 0
        current.append(index)
        tokens += length
    if current:
        chunks.append(current)
    return chunks


def rl_micro_batches(
    batch: RolloutBatch,
    rows: Sequence[int],
    micro_batch_size: int,
    *,
    old_logp: Sequence[torch.Tensor] | None = None,
    ref_logp: Sequence[torch.Tensor] | None = None,
    max_tokens: int = 0,
) -> list[MicroBatch]:
    """``rows`` of ``batch`` (in that order) as micro-batches of at most ``micro_batch_size``
    samples and, when ``max_tokens`` > 0, at most ``max_tokens`` tokens
    (:func:`micro_batch_chunks`).

    The mask carries each response's loss weight; ``old_logp`` / ``ref_logp`` are per-row
    response-aligned tensors of the whole batch (as :func:`to_response_aligned` gives them).
    """
    if batch.advantages is None:
        raise ValueError("compute advantages before building micro-batches")
    rows = list(rows)
    lengths = [len(batch.prompt_tokens[batch.row_group(r)]) + len(batch.response_tokens[r]) for r in rows]
    out = []
    for positions in micro_batch_chunks(lengths, micro_batch_size, max_tokens):
        chunk = [rows[i] for i in positions]
        prompt_lengths = [len(batch.prompt_tokens[batch.row_group(r)]) for r in chunk]
        response_lengths = [len(batch.response_tokens[r]) for r in chunk]
        width = sequence_width(prompt_lengths, response_lengths)
        mask = response_positions(prompt_lengths, response_lengths, width).float()
        mask = mask * batch.loss_weights[chunk][:, None]
        aligned = lambda values: to_sequence_aligned([values[r] for r in chunk], prompt_lengths, width)  # noqa: E731
        out.append(MicroBatch(
            batch.sequences(chunk), mask,
            advantages=to_sequence_aligned([batch.advantages[r, :n] for r, n in zip(chunk, response_lengths)],
                                           prompt_lengths, width),
            rollout_logp=aligned(batch.rollout_logp),
            old_logp=aligned(old_logp) if old_logp is not None else None,
            ref_logp=aligned(ref_logp) if ref_logp is not None else None,
            routes=None if batch.routes is None else [batch.routes[r] for r in chunk],
        ))
    return out
