"""``r1core sft``: fine-tune a checkpoint on jsonl prompt/response traces (cold start,
distillation, rejection-sampling fine-tuning)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from r1core.commands.console import Progress
from r1core.commands.lifecycle import EXIT_STOPPED, StopRequested, active_control
from r1core.config.loader import ConfigError, config_to_dict
from r1core.config.run import RunConfig
from r1core.data.loaders import load_problems
from r1core.data.tokenizers import load_tokenizer
from r1core.parallel.topology import Topology
from r1core.trainer.run_logger import NullLogger, RunLogger
from r1core.trainer.sft import run_sft

log = logging.getLogger("r1core")


def run(cfg: RunConfig) -> int:
    """Fine-tune ``policy.hf_dir`` on the jsonl traces ``sft.traces`` (rows
    ``{"prompt": ..., "response": ...}``; the prompt is used as written, already templated)
    and write the result to ``<run dir>/final``."""
    from r1core.models import build_policy

    for key, value in (("policy.hf_dir", cfg.policy.hf_dir), ("sft.traces", cfg.sft.traces)):
        if not value:
            raise ConfigError(f"r1core sft needs {key}: policy.hf_dir is the model, sft.traces a jsonl "
                              "of prompt/response rows", key=key)
    main = os.environ.get("RANK", "0") == "0"
    if main:
        log.info("r1core sft: reading %s with the tokenizer of %s", cfg.sft.traces, cfg.policy.hf_dir)
    tokenizer = load_tokenizer(cfg.policy.hf_dir)
    # The loader's problem/answer fields carry the prompt and the response here; it names
    # the file and line of any malformed row.
    rows = load_problems(cfg.sft.traces, fields={"problem": "prompt", "answer": "response"}, keep_meta=False)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    examples = [
        (tokenizer.encode(row.problem, add_special_tokens=False), tokenizer.encode(row.answer, add_special_tokens=False) + eos)
        for row in rows
    ]
    if main:
        log.info("r1core sft: %d traces, %d steps of %d; building the policy", len(examples),
                 cfg.sft.num_steps(len(examples)), cfg.sft.batch_size)
    policy = build_policy(cfg.policy.hf_dir, cfg.parallel, dtype=cfg.policy.torch_dtype(), seed=cfg.run.seed,
                          optim=cfg.policy.optim(cfg.sft.lr))
    # Under torchrun every replica trains on its share of each batch; rank 0 alone writes.
    topology = Topology.from_parallel_state()
    run_dir = Path(cfg.run.directory)
    logger = (RunLogger(run_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb, run_name=cfg.run.name,
                        run_config=config_to_dict(cfg)) if topology.is_main else NullLogger())
    progress = Progress(enabled=topology.is_main and cfg.logging.progress, description="r1core sft")
    steps = cfg.sft.num_steps(len(examples))
    progress.plan(steps)
    control = active_control()

    def on_step(step: int, metrics: dict[str, float]) -> None:
        logger.log(step, metrics, phase="sft")
        progress.advance(1, f"nll {metrics['loss']:.3f}")
        if control.stop_requested(topology):
            raise StopRequested(control.signal_name or "a stop signal")

    try:
        history = run_sft(policy, examples, cfg.sft, on_step=on_step, topology=topology)
    except StopRequested as stop:
        progress.close()
        logger.close("stopped")
        if topology.is_main:
            print(f"r1core sft: {stop} (r1core sft saves no checkpoint; run it again to start over)", file=sys.stderr)
        return EXIT_STOPPED
    except BaseException:
        progress.close()
        logger.close("failed")
        raise
    progress.close()
    out = policy.export_hf(run_dir / "final")
    if topology.is_main:
        tokenizer.save_pretrained(out)
    logger.write_summary({"steps": len(history), "final_nll": history[-1]["loss"], "examples": len(examples),
                          "checkpoint": str(out), "wall_seconds": logger.wall_seconds()})
    logger.close()
    return 0
