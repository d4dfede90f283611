"""``r1core eval``: sample a checkpoint with vLLM on a benchmark and report avg@k, pass@k
and maj@k, graded by the verifiable math reward in the worker pool.

Prompts come from the run's ``data`` section (template, system prompt, instruction); the
engine stops at the tokenizer's and the checkpoint's stop tokens and the responses are
decoded by the trainer's decoder (the R1 tags stay in the text). Prompts too long for the
engine are skipped and counted, not fatal. Writes ``eval.json`` (the metrics) and
``samples.jsonl`` (one record per sample: prompt, response, extracted answer, score) to the
run folder.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from r1core.commands.prompting import length_plan, prompting
from r1core.config.loader import ConfigError
from r1core.config.run import RunConfig
from r1core.data.benchmarks import parse_benchmark_name
from r1core.data.prompts import encode_problems
from r1core.data.records import DataFormatError, Problem
from r1core.data.sources import load_source
from r1core.data.tokenizers import load_tokenizer
from r1core.eval.evaluate import evaluate
from r1core.rewards.extract import final_or_last_number

SAMPLES_FILE = "samples.jsonl"


def load_eval_problems(cfg: RunConfig) -> list[Problem]:
    """``eval.benchmark`` (a shipped benchmark or a file read with the ``data`` section's
    field mapping and gold format), cut to ``eval.limit``."""
    section = cfg.eval
    problems = load_source(section.benchmark_entry(), fields=cfg.data.fields, answer_format=cfg.data.answer_format,
                           default_split=section.split)
    return problems[: section.limit] if section.limit > 0 else problems


def report_name(benchmark: str) -> str:
    """Prefix of the metric keys: the benchmark's name, or the file's stem."""
    named = parse_benchmark_name(benchmark)
    return named[0] if named is not None else Path(benchmark).stem


def run(cfg: RunConfig) -> int:
    """Sample ``policy.hf_dir`` on ``eval.benchmark`` and write ``eval.json`` and
    ``samples.jsonl`` to the run folder."""
    from r1core.rewards import RewardPool, RewardPoolConfig, get_reward
    from r1core.rollout import VLLMRollout

    section = cfg.eval
    for key, value in (("policy.hf_dir", cfg.policy.hf_dir), ("eval.benchmark", section.benchmark)):
        if not value:
            raise ConfigError(f"r1core eval needs {key}: policy.hf_dir is the checkpoint, eval.benchmark "
                              "a benchmark name or a jsonl/parquet file", key=key)
    hf_dir = cfg.policy.hf_dir
    tokenizer = load_tokenizer(hf_dir)
    prompts = prompting(cfg.data, tokenizer, hf_dir)
    problems = load_eval_problems(cfg)
    encoded = encode_problems(problems, prompts.template, tokenizer)
    plan = length_plan(cfg.data, cfg.rollout.max_model_len, hf_dir, longest_prompt=encoded.longest,
                       response_budget=section.max_tokens)
    kept, skipped = encoded.within(plan.prompt_budget)
    if not len(kept):
        raise DataFormatError(section.benchmark, None, f"every prompt is longer than {plan.prompt_budget} tokens")
    if plan.note:
        print(f"r1core eval: {plan.note}", file=sys.stderr)
    if skipped:
        print(f"r1core eval: skipped {skipped} of {len(encoded)} problems whose prompt is longer than "
              f"{plan.prompt_budget} tokens", file=sys.stderr)
    rollout = VLLMRollout(hf_dir, config=replace(cfg.rollout, max_model_len=plan.max_model_len))
    try:
        groups = rollout.generate(kept.tokens, n=section.k, max_tokens=section.max_tokens,
                                  temperature=section.temperature, top_p=section.top_p, stop=prompts.stop_ids,
                                  seed=cfg.run.seed)
    finally:
        rollout.close()
    responses = [[prompts.decode(s.token_ids) for s in group] for group in groups]
    reward = get_reward("math_accuracy")
    name = report_name(section.benchmark)
    with RewardPool(RewardPoolConfig(num_workers=cfg.reward.num_workers, sample_timeout_s=cfg.reward.sample_timeout_s)) as pool:
        report = evaluate(
            kept.problems, responses, lambda r, g: pool.score(reward, r, g).scores,
            extract_fn=final_or_last_number, name=name, keep_samples=True,
        )
    samples = report.pop(f"{name}/samples")
    report[f"{name}/num_skipped_too_long"] = skipped
    report[f"{name}/response_length_mean"] = (
        sum(len(s.token_ids) for g in groups for s in g) / sum(len(g) for g in groups))
    out = Path(cfg.run.directory)
    out.mkdir(parents=True, exist_ok=True)
    if section.samples:
        write_samples(out / SAMPLES_FILE, kept, groups, samples)
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def write_samples(path: Path, kept: Any, groups: list[list[Any]], samples: list[dict[str, Any]]) -> None:
    """One JSON line per sample: the problem's id, prompt and gold, the response, its
    extracted answer, score, token count and why generation stopped."""
    index = {problem.id: i for i, problem in enumerate(kept.problems)}
    with open(path, "w", encoding="utf-8") as handle:
        for record in samples:
            i = index[record["id"]]
            sample = groups[i][record["sample"]]
            row = {"id": record["id"], "sample": record["sample"], "prompt": kept.texts[i],
                   "gold": kept.problems[i].answer, "response": record["response"], "answer": record["answer"],
                   "score": record["score"], "correct": record["correct"], "num_tokens": len(sample.token_ids),
                   "finish_reason": sample.finish_reason}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
