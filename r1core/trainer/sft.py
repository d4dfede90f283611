"""Supervised fine-tuning (cold start, distillation) on prompt/response token pairs.

The loss is the mean negative log-likelihood of the response tokens (prompt tokens are
context only), computed through the same fused log-prob head as the RL loss.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from r1core.batch import MicroBatch, sft_micro_batch
from r1core.parallel.layout import check_divisible
from r1core.parallel.topology import Topology
from r1core.trainer.distributed import mean_metrics, reduce_step_metrics, set_loss_scales
from r1core.trainer.protocols import TrainablePolicy


@dataclass
class SFTConfig:
    """Supervised fine-tuning: the cold start of ``r1core train`` (skipped when ``epochs`` is
    0) and the whole of ``r1core sft``."""

    epochs: float = 20.0
    """Passes over the traces (fractions allowed)."""
    batch_size: int = 64
    """Traces per optimiser step."""
    micro_batch_size: int = 64
    """Traces per forward/backward; the loss is the token-mean over the whole batch however
    it is split."""
    lr: float = 3e-3
    """Learning rate (AdamW)."""
    trace_noise: float = 0.5
    """Embedded run only: share of synthetic cold-start traces whose final answer is wrong.
    R1's cold-start data is imperfect; here the share is explicit, and RL on verifiable
    rewards has to correct what SFT imitated."""
    traces: str = ""
    """jsonl/parquet traces: rows ``{"prompt", "response"}`` (the prompt as written),
    ``{"problem", "response"}`` (the problem through the run's template) or ``{"messages"}``
    (a conversation through the chat template, trained on its last assistant turn). The
    whole of ``r1core sft``; in ``r1core train`` the cold start's data."""
    cold_start: str = "auto"
    """``r1core train``'s cold start: ``synthetic`` (traces the synthetic task writes),
    ``traces`` (``sft.traces``), ``none``, or ``auto``: ``traces`` when ``sft.traces`` is set,
    else ``synthetic`` for the embedded model on the synthetic task, else ``none`` (a real
    checkpoint is not fine-tuned on synthetic traces unless asked)."""
    seed: int = 0
    """Shuffling seed."""
    max_row_bytes: int = 1 << 20
    """Longest line of ``traces`` accepted (bytes); a longer one is refused before any work,
    so one oversized row cannot swell the process while it is tokenised."""

    def __post_init__(self) -> None:
        if not self.epochs >= 0:
            raise ValueError(f"sft.epochs must be >= 0 (0 skips the cold start), got {self.epochs}")
        for key in ("batch_size", "micro_batch_size", "max_row_bytes"):
            if getattr(self, key) < 1:
                raise ValueError(f"sft.{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ValueError(f"sft.lr must be > 0, got {self.lr}")
        if not 0 <= self.trace_noise <= 1:
            raise ValueError(f"sft.trace_noise must be in [0, 1], got {self.trace_noise}")
        if self.cold_start not in ("auto", "synthetic", "traces", "none"):
            raise ValueError(f"sft.cold_start must be auto, synthetic, traces or none, got {self.cold_start!r}")
        if self.cold_start == "traces" and not self.traces:
            raise ValueError("sft.cold_start=traces needs sft.traces (a jsonl/parquet file of traces)")

    def validate(self) -> None:
        """``traces``, when given, is a ``.parquet`` file, or a non-empty UTF-8 ``.jsonl`` file
        whose lines are at most ``max_row_bytes`` long (read once, a line at a time; the rows'
        fields are checked by the loader, which names the line).

        Raises:
            ValueError: naming ``sft.traces``, the line and what is wrong.
        """
        if not self.traces:
            return
        path = Path(self.traces)
        if path.suffix not in (".jsonl", ".parquet"):
            raise ValueError(f"sft.traces={self.traces!r}: expected a .jsonl file (one JSON object per line) or a "
                             f".parquet file, got a {path.suffix or 'suffix-less'} file")
        if not path.is_file():
            raise ValueError(f"sft.traces={self.traces!r}: no such file")
        if path.suffix == ".parquet":
            return
        rows = 0
        with open(path, "rb") as handle:
            for number, line in enumerate(iter(lambda: handle.readline(self.max_row_bytes + 1), b""), start=1):
                # readline stops one byte past the limit, so a longer line is never held whole.
                if len(line.rstrip(b"\r\n")) > self.max_row_bytes:
                    raise ValueError(f"sft.traces={self.traces!r}: line {number} is longer than sft.max_row_bytes="
                                     f"{self.max_row_bytes}")
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ValueError(f"sft.traces={self.traces!r}: line {number} is not UTF-8 ({error.reason} at "
                                     f"byte {error.start})") from None
                rows += bool(text.strip())
        if not rows:
            raise ValueError(f"sft.traces={self.traces!r}: the file holds no rows")



def num_sft_steps(config: SFTConfig, num_examples: int) -> int:
    """Optimiser steps of :func:`run_sft` over ``num_examples`` examples."""
    return max(1, int(round(config.epochs * num_examples / config.batch_size)))


def sft_loss(logp: torch.Tensor, entropy: torch.Tensor | None, micro: MicroBatch):
    """Token-mean NLL over ``micro.mask`` (response tokens), weighted by the micro-batch's
    ``loss_scale`` (its share of the step's tokens); the ``nll`` metric is the micro-batch's
    own mean."""
    mask = micro.mask
    count = mask.sum().clamp(min=1)
    nll = -(logp * mask).sum() / count
    return nll * micro.loss_scale, {"nll": nll.detach()}


def sft_micro_batches(examples: Sequence[tuple[list[int], list[int]]], micro_batch_size: int) -> list[MicroBatch]:
    """``examples`` in chunks of ``micro_batch_size`` (see :func:`r1core.batch.sft_micro_batch`)."""
    return [sft_micro_batch(examples[start : start + micro_batch_size])
            for start in range(0, len(examples), micro_batch_size)]


def run_sft(
    policy: TrainablePolicy,
    examples: Sequence[tuple[list[int], list[int]]],
    config: SFTConfig,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    topology: Topology | None = None,
) -> list[dict[str, float]]:
    """Train ``policy`` on ``(prompt_ids, response_ids)`` pairs; return per-step metrics.

    ``on_step(step, metrics)`` is called after every optimiser step (logging, progress).

    Data parallelism (``topology``): every
    rank draws the same ``batch_size`` rows and trains on its replica's contiguous share,
    so the policy's gradient average over replicas is the gradient of the whole batch (as
    one process accumulating the same shares as micro-batches would get); the returned
    metrics are the replicas' mean. ``batch_size`` must divide by the data-parallel size.
    Under pipeline parallelism the last stage's metrics (the loss lives there) are
    broadcast to the other stages, so every rank returns the same history.
    """
    topology = topology or Topology()
    local = check_divisible(config.batch_size, topology.dp_size, what="sft.batch_size")
    offset = topology.dp_rank * local
    if not examples:
        raise ValueError("no SFT examples")
    for index, (prompt, response) in enumerate(examples):
        if not prompt or not response:
            raise ValueError(f"SFT example {index} has an empty prompt or response")
    rng = random.Random(config.seed)
    num_steps = num_sft_steps(config, len(examples))
    order: list[int] = []
    history = []
    for step in range(num_steps):
        while len(order) < config.batch_size:
            epoch = list(range(len(examples)))
            rng.shuffle(epoch)
            order += epoch
        rows, order = order[: config.batch_size], order[config.batch_size :]
        rows = rows[offset : offset + local]
        micro = sft_micro_batches([examples[i] for i in rows], config.micro_batch_size)
        # Weighted by response tokens over the whole step's (every replica's), so the step
        # minimises the token-mean NLL of the global batch rather than a mean of
        # micro-batch means.
        set_loss_scales(micro, [m.mask.sum() for m in micro], topology)
        metrics = policy.train_step(micro, sft_loss)
        # The loss exists on the last pipeline stage only: its floats reach every stage.
        metrics = topology.broadcast_from_last_stage(mean_metrics([metrics]) if topology.is_last_stage else None)
        if topology.dp_size > 1:
            metrics = reduce_step_metrics(topology.dp_all_gather(metrics))
        history.append(metrics)
        if on_step is not None:
            on_step(step, metrics)
    return history
