"""``r1core sft``: fine-tune a checkpoint on jsonl/parquet traces (cold start, distillation,
rejection-sampling fine-tuning).

A trace row is one of:

- ``{"prompt": ..., "response": ...}``: the prompt as written (already templated);
- ``{"problem": ..., "response": ...}``: the problem rendered by the run's template
  (``data.template``, ``data.system_prompt``, ``data.instruction``; a ``system`` field of the
  row is its own system prompt);
- ``{"messages": [{"role": ..., "content": ...}, ...]}``: a conversation rendered by the
  tokenizer's chat template, trained on its last message, which must be the assistant's.

The response ends with the chat template's end-of-turn token where a chat template rendered
the prompt, else with the tokenizer's EOS, so the model learns where to stop.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from r1core.commands.console import Progress
from r1core.commands.lifecycle import EXIT_STOPPED, StopRequested, active_control
from r1core.commands.prompting import Prompting, model_positions, prompting
from r1core.config.loader import ConfigError, config_to_dict
from r1core.config.run import RunConfig
from r1core.data.loaders import read_rows
from r1core.data.records import DataFormatError
from r1core.data.templates import ChatTemplate
from r1core.data.tokenizers import end_of_turn_id, load_tokenizer
from r1core.parallel.topology import Topology
from r1core.trainer.run_logger import NullLogger, RunLogger
from r1core.trainer.sft import num_sft_steps, run_sft

Example = tuple[list[int], list[int]]


def _text(path: str, line: int, row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise DataFormatError(path, line, f"field {key!r} must be a non-empty string, got {type(value).__name__}")
    return value


def trace_example(path: str, line: int, row: Any, tokenizer: Any, prompts: Prompting) -> Example:
    """``(prompt ids, response ids)`` of one trace row (see the module docstring)."""
    if not isinstance(row, dict):
        raise DataFormatError(path, line, f"expected a JSON object, got {type(row).__name__}")
    eos = tokenizer.eos_token_id
    if "messages" in row:
        messages = row["messages"]
        if (not isinstance(messages, list) or len(messages) < 2
                or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)):
            raise DataFormatError(path, line, "field 'messages' must be a list of at least two "
                                              "{role, content} objects")
        if messages[-1].get("role") != "assistant":
            raise DataFormatError(path, line, "the last message must be the assistant's (the response trained on)")
        if getattr(tokenizer, "chat_template", None) is None:
            raise DataFormatError(path, line, "a 'messages' row needs a tokenizer with a chat template")
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        end = end_of_turn_id(tokenizer)
        response = messages[-1]["content"]
    elif "prompt" in row:
        prompt_ids = tokenizer.encode(_text(path, line, row, "prompt"), add_special_tokens=False)
        end, response = eos, _text(path, line, row, "response")
    elif "problem" in row:
        system = row.get("system")
        text = prompts.template(_text(path, line, row, "problem"), system=system if isinstance(system, str) else None)
        chat = isinstance(prompts.template, ChatTemplate)
        prompt_ids = tokenizer.encode(text, add_special_tokens=not chat)
        end = end_of_turn_id(tokenizer) if chat else eos
        response = _text(path, line, row, "response")
    else:
        raise DataFormatError(path, line, f"a trace needs 'prompt' and 'response', 'problem' and 'response', or "
                                          f"'messages'; row has {sorted(row)}")
    end = end if end is not None else eos
    response_ids = tokenizer.encode(response, add_special_tokens=False) + ([end] if end is not None else [])
    if not prompt_ids:
        raise DataFormatError(path, line, "the prompt encodes to no tokens")
    return prompt_ids, response_ids


def load_sft_examples(path: str, tokenizer: Any, prompts: Prompting, *, max_tokens: int | None = None,
                      log: Any = None) -> list[Example]:
    """Every trace of ``path`` as ``(prompt ids, response ids)``; traces longer than
    ``max_tokens`` (the model's positions) are skipped, and the count is passed to ``log``."""
    examples = [trace_example(path, line, row, tokenizer, prompts) for line, row in read_rows(path)]
    if max_tokens is None:
        return examples
    kept = [e for e in examples if len(e[0]) + len(e[1]) <= max_tokens]
    if not kept:
        raise DataFormatError(path, None, f"every trace is longer than the model's {max_tokens} positions")
    if len(kept) < len(examples) and log is not None:
        log(f"skipped {len(examples) - len(kept)} of {len(examples)} traces longer than the model's "
            f"{max_tokens} positions")
    return kept


def check_recompute(recompute: bool) -> None:
    """``policy.recompute`` runs through Megatron-Core's activation checkpointing, which saves
    and restores the CUDA RNG state: refused, before any work, where there is no CUDA."""
    import torch

    if recompute and not torch.cuda.is_available():
        raise ConfigError("policy.recompute=true needs CUDA: Megatron-Core's activation checkpointing saves the "
                          "CUDA RNG state; leave it off on CPU", key="policy.recompute")

log = logging.getLogger("r1core")


def run(cfg: RunConfig) -> int:
    """Fine-tune ``policy.hf_dir`` on ``sft.traces`` and write the result to
    ``<run dir>/final``."""
    from r1core.models import build_policy

    for key, value in (("policy.hf_dir", cfg.policy.hf_dir), ("sft.traces", cfg.sft.traces)):
        if not value:
            raise ConfigError(f"r1core sft needs {key}: policy.hf_dir is the model, sft.traces a jsonl "
                              "of prompt/response rows", key=key)
    check_recompute(cfg.policy.recompute)
    main = os.environ.get("RANK", "0") == "0"
    hf_dir = cfg.policy.hf_dir
    if main:
        log.info("r1core sft: reading %s with the tokenizer of %s", cfg.sft.traces, hf_dir)
    tokenizer = load_tokenizer(hf_dir)
    examples = load_sft_examples(cfg.sft.traces, tokenizer, prompting(cfg.data, tokenizer, hf_dir),
                                 max_tokens=model_positions(hf_dir),
                                 log=lambda message: print(f"r1core sft: {message}", file=sys.stderr))
    steps = num_sft_steps(cfg.sft, len(examples))
    if main:
        log.info("r1core sft: %d traces, %d steps of %d; building the policy", len(examples), steps,
                 cfg.sft.batch_size)
    optim = cfg.policy.optim(cfg.sft.lr, total_steps=steps)
    policy = build_policy(hf_dir, cfg.parallel, dtype=cfg.policy.torch_dtype(), seed=cfg.run.seed, optim=optim,
                          recompute=cfg.policy.recompute)
    # Under torchrun every replica trains on its share of each batch; rank 0 alone writes.
    topology = Topology.from_parallel_state()
    run_dir = Path(cfg.run.directory)
    logger = (RunLogger(run_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb, run_name=cfg.run.name,
                        run_config=config_to_dict(cfg)) if topology.is_main else NullLogger())
    progress = Progress(enabled=topology.is_main and cfg.logging.progress, description="r1core sft")
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
                          "checkpoint": str(out), "wall_seconds": logger.end_attempt("finished")})
    logger.close()
    return 0
