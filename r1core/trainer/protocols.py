"""What the trainers need from the components handed to them.

``r1core.models.Policy`` and ``r1core.rollout.VLLMRollout`` are the implementations a run
builds; tests hand in small stand-ins with the same methods.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

import torch

from r1core.batch import MicroBatch, Prompt


class LossFunction(Protocol):
    def __call__(self, logp: torch.Tensor, entropy: torch.Tensor | None,
                 micro_batch: MicroBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class TrainablePolicy(Protocol):
    """A policy the trainers score and update (``r1core.models.Policy``)."""

    def logprobs(self, input_ids: Sequence[torch.Tensor], *, temperature: float = 1.0,
                 routes: Sequence[Any] | None = None) -> torch.Tensor:
        """float32 ``[B, W]`` sequence-aligned log-probs (see :mod:`r1core.batch`); ``routes``:
        per sample, the MoE experts to replay (``RolloutBatch.routes``)."""
        ...

    def train_step(self, micro_batches: Sequence[MicroBatch], loss_fn: LossFunction, *,
                   temperature: float = 1.0, return_entropy: bool = False) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def iter_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]: ...


class GeneratedSample(Protocol):
    """One response of the engine (``r1core.rollout.RolloutSample``); a MoE engine may also
    give ``routes``, the experts it chose for each token (rollout routing replay)."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str


class RolloutEngine(Protocol):
    """Samples responses and takes the policy's weights (``r1core.rollout.VLLMRollout``)."""

    def generate(self, prompts: Sequence[Sequence[int]], *, n: int, max_tokens: int, temperature: float,
                 top_p: float = 1.0, seed: int | None = None) -> list[list[GeneratedSample]]: ...

    def sync_weights(self, policy: TrainablePolicy) -> Any: ...


class PromptSource(Protocol):
    """Endless, resumable stream of training prompts (``r1core.algos.sampling.PromptStream``)."""

    def next(self, count: int) -> list[Prompt]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RewardScorer(Protocol):
    """``(responses, golds) -> (totals, {component: scores}, number of failed scorings)``."""

    def __call__(self, responses: list[str], golds: list[str]) -> tuple[list[float], dict[str, list[float]], int]: ...
