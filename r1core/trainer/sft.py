"""Supervised fine-tuning (cold start, distillation) on prompt/response token pairs.

The loss is the mean negative log-likelihood of the response tokens (prompt tokens are
context only), computed through the same fused log-prob head as the RL loss.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from r1core.trainer.samples import response_mask


@dataclass
class SFTConfig:
    """Settings of a supervised pass."""

    epochs: float = 1.0
    """Passes over the examples (fractions allowed)."""
    batch_size: int = 32
    """Examples per optimiser step."""
    micro_batch_size: int = 32
    """Examples per forward/backward."""
    seed: int = 0
    """Shuffling seed."""


def sft_loss(logp: torch.Tensor, entropy: torch.Tensor | None, micro: dict[str, Any]):
    """Token-mean NLL over ``micro["mask"]`` (response tokens)."""
    mask = micro["mask"]
    count = mask.sum().clamp(min=1)
    nll = -(logp * mask).sum() / count
    return nll, {"nll": nll.detach()}


def sft_micro_batches(examples: Sequence[tuple[list[int], list[int]]], micro_batch_size: int) -> list[dict[str, Any]]:
    """Micro-batch dicts (``input_ids`` list + response ``mask``) for ``Policy.train_step``."""
    out = []
    for start in range(0, len(examples), micro_batch_size):
        chunk = examples[start : start + micro_batch_size]
        prompt_lengths = [len(p) for p, _ in chunk]
        response_lengths = [len(r) for _, r in chunk]
        width = max(p + r for p, r in zip(prompt_lengths, response_lengths)) - 1
        out.append(
            {
                "input_ids": [torch.tensor(p + r, dtype=torch.long) for p, r in chunk],
                "mask": response_mask(prompt_lengths, response_lengths, width).float(),
            }
        )
    return out


def run_sft(
    policy: Any,
    examples: Sequence[tuple[list[int], list[int]]],
    config: SFTConfig,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``policy`` on ``(prompt_ids, response_ids)`` pairs; return per-step metrics.

    ``on_step(step, metrics)`` is called after every optimiser step (logging, progress).
    """
    if not examples:
        raise ValueError("no SFT examples")
    for index, (prompt, response) in enumerate(examples):
        if not prompt or not response:
            raise ValueError(f"SFT example {index} has an empty prompt or response")
    rng = random.Random(config.seed)
    num_steps = max(1, int(round(config.epochs * len(examples) / config.batch_size)))
    order: list[int] = []
    history = []
    for step in range(num_steps):
        while len(order) < config.batch_size:
            epoch = list(range(len(examples)))
            rng.shuffle(epoch)
            order += epoch
        rows, order = order[: config.batch_size], order[config.batch_size :]
        micro = sft_micro_batches([examples[i] for i in rows], config.micro_batch_size)
        metrics = {k: float(v) for k, v in policy.train_step(micro, sft_loss).items()}
        history.append(metrics)
        if on_step is not None:
            on_step(step, metrics)
    return history
