"""``r1core eval``: sample a checkpoint with vLLM on a benchmark and report avg@k, pass@k
and maj@k, graded by the verifiable math reward in the worker pool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from r1core.config.loader import ConfigError
from r1core.config.run import RunConfig
from r1core.data.benchmarks import BENCHMARKS, load_benchmark
from r1core.data.loaders import load_problems
from r1core.data.templates import get_template
from r1core.data.tokenizers import load_tokenizer
from r1core.eval.evaluate import evaluate
from r1core.rewards.extract import extract_answer


def load_eval_problems(name_or_path: str, split: str, limit: int) -> list[Any]:
    """A shared benchmark by name (``gsm8k``, ``math500``, ``aime24``, ``amc23``) or a
    jsonl/parquet file with ``problem`` and ``answer`` fields."""
    problems = load_benchmark(name_or_path, split) if name_or_path in BENCHMARKS else load_problems(name_or_path)
    return problems[:limit] if limit > 0 else problems


def run(cfg: RunConfig) -> int:
    """Sample ``policy.hf_dir`` on ``eval.benchmark`` and write ``<run dir>/eval.json``."""
    from r1core.rewards import RewardPool, RewardPoolConfig, get_reward
    from r1core.rollout import VLLMRollout

    section = cfg.eval
    for key, value in (("policy.hf_dir", cfg.policy.hf_dir), ("eval.benchmark", section.benchmark)):
        if not value:
            raise ConfigError(f"r1core eval needs {key}: policy.hf_dir is the checkpoint, eval.benchmark "
                              "a benchmark name or a jsonl/parquet file", key=key)
    tokenizer = load_tokenizer(cfg.policy.hf_dir)
    kwargs = {"tokenizer": tokenizer} if cfg.data.template == "chat" else {}
    template = get_template(cfg.data.template, **kwargs)
    problems = load_eval_problems(section.benchmark, section.split, section.limit)
    prompts = [tokenizer.encode(template(p.problem), add_special_tokens=False) for p in problems]
    rollout = VLLMRollout(cfg.policy.hf_dir, config=cfg.rollout)
    try:
        groups = rollout.generate(prompts, n=section.k, max_tokens=section.max_tokens, temperature=section.temperature,
                                  seed=cfg.run.seed)
    finally:
        rollout.close()
    responses = [[tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in group] for group in groups]
    reward = get_reward("math_accuracy")
    with RewardPool(RewardPoolConfig(num_workers=cfg.reward.num_workers, sample_timeout_s=cfg.reward.sample_timeout_s)) as pool:
        report = evaluate(
            problems, responses, lambda r, g: pool.score(reward, r, g).scores,
            extract_fn=lambda text: extract_answer(text).final, name=Path(section.benchmark).stem,
        )
    out = Path(cfg.run.directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0
