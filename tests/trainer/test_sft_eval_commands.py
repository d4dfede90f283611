"""``r1core sft`` (distillation from jsonl traces) and ``r1core eval`` on a tiny local model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")
pytest.importorskip("megatron.core")
pytest.importorskip("math_verify")

pytestmark = pytest.mark.slow

TRACES = [
    {"prompt": f"{a}+{b}=?\n<think>", "response": f"{a}+{b}={a + b}</think><answer>{a + b}</answer>"}
    for a in range(6)
    for b in range(6)
]


def r1core(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([sys.executable, "-m", "r1core.cli", *args], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    return result


def test_sft_then_eval(tmp_path):
    from r1core.trainer.embedded import EmbeddedModelConfig, make_tiny_qwen2, train_tokenizer

    corpus = [row["prompt"] + row["response"] for row in TRACES]
    tokenizer = train_tokenizer(corpus, tmp_path / "tok", vocab_size=48)
    start = make_tiny_qwen2(
        tmp_path / "start", tokenizer,
        EmbeddedModelConfig(hidden_size=64, num_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=128),
    )
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(row) + "\n" for row in TRACES))
    r1core("sft", f"run.output_root={tmp_path}", "run.name=sft", f"policy.hf_dir={start}", f"sft.traces={traces}",
           "sft.epochs=2", "sft.batch_size=12", "sft.micro_batch_size=12")
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary["examples"] == len(TRACES) and summary["steps"] == 6
    history = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["nll"] < history[0]["nll"]

    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"problem": f"{a}+{a}=?", "answer": str(2 * a)}) + "\n" for a in range(4)))
    r1core("eval", f"run.output_root={tmp_path}", "run.name=eval", f"policy.hf_dir={tmp_path / 'sft' / 'final'}",
           f"eval.benchmark={problems}", "eval.k=2", "eval.max_tokens=12", "rollout.max_model_len=64", "reward.num_workers=1")
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["problems/num_problems"] == 4 and report["problems/num_samples"] == 2
    for key in ("problems/avg@2", "problems/pass@1", "problems/pass@2", "problems/maj@2"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["problems/pass@2"] >= report["problems/pass@1"]


def test_sft_without_traces_names_what_is_missing(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "r1core.cli", "sft", f"run.output_root={tmp_path}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "sft.traces" in result.stderr
