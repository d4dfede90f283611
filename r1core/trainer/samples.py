"""From rollout samples to training micro-batches.

A sample is ``prompt ids + response ids``. The policy scores packed sequences and returns
``logp [B, T-1]`` where ``logp[b, t]`` is the log-prob of token ``t + 1``; response token
``j`` of sample ``b`` therefore sits at column ``prompt_len[b] - 1 + j``. Every per-token
tensor here (masks, old/reference/rollout log-probs) uses that layout, built per
micro-batch at the width the policy will return for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from r1core.batch import MicroBatch


@dataclass
class SampleBatch:
    """A flat batch of ``B`` samples (all groups of one step, in group order).

    prompt_ids / response_ids: token ids per sample.
    rollout_logp: per response token, the engine's log-prob of the sampled token (after
        temperature), float32 1-D tensors.
    group_ids: int64 ``[B]``, the prompt each sample answers.
    rewards: float32 ``[B]``; truncated: bool ``[B]`` (hit the length limit).
    advantages: float32 ``[B, R]`` once computed, response-aligned (column ``j`` is
        response token ``j``; right-padded to the longest response ``R``).
    loss_weights: float32 ``[B]`` (0 drops a sample from the loss, e.g. overlong
        filtering).
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    rollout_logp: list[torch.Tensor]
    group_ids: torch.Tensor
    rewards: torch.Tensor
    truncated: torch.Tensor
    advantages: torch.Tensor | None = None
    loss_weights: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def response_lengths(self) -> torch.Tensor:
        return torch.tensor([len(r) for r in self.response_ids], dtype=torch.long)

    def sequences(self, indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        """``prompt + response`` id tensors (the policy packs them without padding)."""
        indices = range(len(self)) if indices is None else indices
        return [torch.tensor(self.prompt_ids[i] + self.response_ids[i], dtype=torch.long) for i in indices]

    def select(self, indices: Sequence[int]) -> "SampleBatch":
        """The samples at ``indices``, in that order."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return SampleBatch(
            [self.prompt_ids[i] for i in indices],
            [self.response_ids[i] for i in indices],
            [self.rollout_logp[i] for i in indices],
            self.group_ids[index],
            self.rewards[index],
            self.truncated[index],
            pick(self.advantages),
            pick(self.loss_weights),
            {k: _select_extra(v, indices, index) for k, v in self.extras.items()},
        )

    def response_mask(self) -> torch.Tensor:
        """bool ``[B, R]``: True on the response tokens, response-aligned."""
        lengths = self.response_lengths
        width = int(lengths.max()) if len(self) else 0
        return torch.arange(width)[None, :] < lengths[:, None]


def _select_extra(value: Any, indices: Sequence[int], index: torch.Tensor) -> Any:
    if isinstance(value, list):
        return [value[i] for i in indices]
    if isinstance(value, dict):
        return {k: _select_extra(v, indices, index) for k, v in value.items()}
    return value[index]


def scatter_response(values: Sequence[torch.Tensor], prompt_lengths: Sequence[int], width: int) -> torch.Tensor:
    """Place per-response-token values ``values[b]`` into ``[B, width]`` at columns
    ``prompt_len - 1 + j`` (zeros elsewhere)."""
    out = torch.zeros(len(values), width, dtype=torch.float32)
    for row, (value, prompt_len) in enumerate(zip(values, prompt_lengths)):
        out[row, prompt_len - 1 : prompt_len - 1 + value.numel()] = value.float()
    return out


def response_mask(prompt_lengths: Sequence[int], response_lengths: Sequence[int], width: int) -> torch.Tensor:
    """bool ``[B, width]``: True at the columns of response tokens."""
    columns = torch.arange(width)[None, :]
    start = torch.as_tensor(list(prompt_lengths))[:, None] - 1
    stop = start + torch.as_tensor(list(response_lengths))[:, None]
    return (columns >= start) & (columns < stop)


def gather_response(per_position: torch.Tensor, prompt_lengths: Sequence[int], response_lengths: Sequence[int]) -> list[torch.Tensor]:
    """Inverse of :func:`scatter_response`: per-sample response values from ``[B, W]``."""
    return [
        per_position[row, p - 1 : p - 1 + n].clone()
        for row, (p, n) in enumerate(zip(prompt_lengths, response_lengths))
    ]


def micro_batches(
    batch: SampleBatch,
    micro_batch_size: int,
    *,
    old_logp: list[torch.Tensor] | None = None,
    ref_logp: list[torch.Tensor] | None = None,
    order: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Split ``batch`` into the micro-batch dicts ``Policy.train_step`` consumes.

    Each dict holds ``input_ids`` (a list of sequences, packed by the policy), and the
    loss inputs at the policy's output width ``max_len - 1``: ``mask``, ``advantages``,
    ``rollout_logp``, and ``old_logp`` / ``ref_logp`` when given (per-sample response
    tensors, as :func:`gather_response` returns them).
    """
    if batch.advantages is None:
        raise ValueError("compute advantages before building micro-batches")
    order = list(range(len(batch))) if order is None else list(order)
    weights = batch.loss_weights if batch.loss_weights is not None else torch.ones(len(batch))
    out = []
    for start in range(0, len(order), micro_batch_size):
        rows = order[start : start + micro_batch_size]
        prompt_lengths = [len(batch.prompt_ids[i]) for i in rows]
        response_lengths = [len(batch.response_ids[i]) for i in rows]
        width = max(p + n for p, n in zip(prompt_lengths, response_lengths)) - 1
        mask = response_mask(prompt_lengths, response_lengths, width)
        mask = mask.float() * weights[rows][:, None]
        micro = MicroBatch(
            batch.sequences(rows), mask,
            advantages=scatter_response(
                [batch.advantages[i, : n] for i, n in zip(rows, response_lengths)], prompt_lengths, width
            ),
            rollout_logp=scatter_response([batch.rollout_logp[i] for i in rows], prompt_lengths, width),
        )
        if old_logp is not None:
            micro.old_logp = scatter_response([old_logp[i] for i in rows], prompt_lengths, width)
        if ref_logp is not None:
            micro.ref_logp = scatter_response([ref_logp[i] for i in rows], prompt_lengths, width)
        out.append(micro)
    return out
