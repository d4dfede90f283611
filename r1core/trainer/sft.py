"""Supervised fine-tuning (cold start, distillation) on prompt/response token pairs.

The loss is the mean negative log-likelihood of the response tokens (prompt tokens are
context only), computed through the same fused log-prob head as the RL loss.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import torch

from r1core.trainer.config import SFTConfig
from r1core.batch import MicroBatch, sft_micro_batch


def sft_loss(logp: torch.Tensor, entropy: torch.Tensor | None, micro: dict[str, Any]):
    """Token-mean NLL over ``micro.mask`` (response tokens), weighted by the micro-batch's
    ``loss_scale`` (its share of the step's tokens, :func:`set_loss_scales`); the ``nll``
    metric is the micro-batch's own mean."""
    mask = micro.mask
    count = mask.sum().clamp(min=1)
    nll = -(logp * mask).sum() / count
    return nll * micro.loss_scale, {"nll": nll.detach()}


def set_loss_scales(micro: list[dict[str, Any]], topology: Any) -> None:
    """Weight the micro-batches by their response tokens over the whole step's (every
    replica's), so the step minimises the token-mean NLL of the global batch rather than a
    mean of micro-batch means, which over-weights the tokens of short micro-batches."""
    from r1core.trainer.distributed import global_loss_scales

    scales = global_loss_scales([float(m.mask.sum()) for m in micro], topology)
    for m, scale in zip(micro, scales):
        m.loss_scale = scale


def sft_micro_batches(examples: Sequence[tuple[list[int], list[int]]], micro_batch_size: int) -> list[MicroBatch]:
    """``examples`` in chunks of ``micro_batch_size`` (see :func:`r1core.batch.sft_micro_batch`)."""
    return [sft_micro_batch(examples[start : start + micro_batch_size])
            for start in range(0, len(examples), micro_batch_size)]


def run_sft(
    policy: Any,
    examples: Sequence[tuple[list[int], list[int]]],
    config: SFTConfig,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    topology: Any = None,
) -> list[dict[str, float]]:
    """Train ``policy`` on ``(prompt_ids, response_ids)`` pairs; return per-step metrics.

    ``on_step(step, metrics)`` is called after every optimiser step (logging, progress).

    Data parallelism (``topology``, a :class:`r1core.trainer.distributed.Topology`): every
    rank draws the same ``batch_size`` rows and trains on its replica's contiguous share,
    so the policy's gradient average over replicas is the gradient of the whole batch (as
    one process accumulating the same shares as micro-batches would get); the returned
    metrics are the replicas' mean. ``batch_size`` must divide by the data-parallel size.
    Under pipeline parallelism the last stage's metrics (the loss lives there) are
    broadcast to the other stages, so every rank returns the same history.
    """
    from r1core.parallel.layout import check_divisible
    from r1core.parallel.topology import Topology
    from r1core.trainer.distributed import mean_metrics, reduce_step_metrics

    topology = topology or Topology()
    local = check_divisible(config.batch_size, topology.dp_size, what="sft.batch_size")
    offset = topology.dp_rank * local
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
        rows = rows[offset : offset + local]
        micro = sft_micro_batches([examples[i] for i in rows], config.micro_batch_size)
        set_loss_scales(micro, topology)
        metrics = policy.train_step(micro, sft_loss)
        # The loss exists on the last pipeline stage only: its floats reach every stage.
        metrics = topology.broadcast_from_last_stage(mean_metrics([metrics]) if topology.is_last_stage else None)
        if topology.dp_size > 1:
            metrics = reduce_step_metrics(topology.dp_all_gather(metrics))
        history.append(metrics)
        if on_step is not None:
            on_step(step, metrics)
    return history


def run(cfg: Any) -> int:
    """``r1core sft``: fine-tune ``policy.hf_dir`` on the jsonl traces ``sft.traces``
    (rows ``{"prompt": ..., "response": ...}``; the prompt is used as written, already
    templated) and write the result to ``<run dir>/final``."""
    from pathlib import Path

    from r1core.data.loaders import load_problems
    from r1core.models import OptimConfig, build_policy
    from r1core.trainer.run_logger import RunLogger

    from r1core.config import ConfigError

    for key, value in (("policy.hf_dir", cfg.policy.hf_dir), ("sft.traces", cfg.sft.traces)):
        if not value:
            raise ConfigError(f"r1core sft needs {key}: policy.hf_dir is the model, sft.traces a jsonl "
                              "of prompt/response rows", key=key)
    from r1core.trainer.bootstrap import load_tokenizer

    tokenizer = load_tokenizer(cfg.policy.hf_dir)
    # The loader's problem/answer fields carry the prompt and the response here; it names
    # the file and line of any malformed row.
    rows = load_problems(cfg.sft.traces, fields={"problem": "prompt", "answer": "response"}, keep_meta=False)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    examples = [
        (tokenizer.encode(row.problem, add_special_tokens=False), tokenizer.encode(row.answer, add_special_tokens=False) + eos)
        for row in rows
    ]
    policy = build_policy(cfg.policy.hf_dir, cfg.parallel, dtype=cfg.policy.torch_dtype(), seed=cfg.run.seed,
                          optim=OptimConfig(lr=cfg.sft.lr, weight_decay=cfg.policy.weight_decay, clip_grad=cfg.policy.clip_grad))
    from r1core.parallel.topology import Topology
    from r1core.trainer.run_logger import NullLogger

    # Under torchrun every replica trains on its share of each batch; rank 0 alone writes.
    topology = Topology.from_parallel_state()
    run_dir = Path(cfg.run.directory)
    logger = RunLogger(run_dir, tensorboard=cfg.logging.tensorboard) if topology.is_main else NullLogger()
    history = run_sft(policy, examples, cfg.sft, on_step=lambda step, metrics: logger.log(step, metrics, phase="sft"),
                      topology=topology)
    out = policy.export_hf(run_dir / "final")
    if topology.is_main:
        tokenizer.save_pretrained(out)
    logger.write_summary({"steps": len(history), "final_nll": history[-1]["loss"], "examples": len(examples), "checkpoint": str(out)})
    logger.close()
    return 0
