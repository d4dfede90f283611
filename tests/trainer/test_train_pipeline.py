"""``r1core train`` end to end on a tiny configuration, and bit-exact resume.

Each run is a real subprocess of the ``r1core`` command (tokenizer, model, cold-start SFT,
vLLM rollouts, rewards in the worker pool, GRPO, evaluation, checkpoints), so the command
line, the configuration and the artefacts are what a user gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytest.importorskip("megatron.core")
pytest.importorskip("math_verify")

pytestmark = pytest.mark.slow

TINY = [
    "embedded.vocab_size=64",
    "embedded.model.hidden_size=64",
    "embedded.model.num_layers=1",
    "embedded.model.num_attention_heads=2",
    "embedded.model.num_key_value_heads=1",
    "embedded.model.intermediate_size=128",
    "data.num_train=64",
    "data.num_eval=8",
    "sft.epochs=1",
    "sft.batch_size=32",
    "sft.micro_batch_size=32",
    "trainer.prompts_per_step=4",
    "trainer.samples_per_prompt=4",
    "trainer.max_response_tokens=24",
    "eval.every=1",
    "eval.k=2",
    "eval.max_tokens=24",
    "checkpoint.interval=1",
    "reward.num_workers=1",
    "rollout.max_model_len=96",
    # A barely trained model solves nothing; a length term makes rewards differ within a
    # group, so the RL steps really change the weights (else the resume check is vacuous).
    "reward.weights.length_penalty=1.0",
    "reward.weights.r1_format=0.5",
]


def train(root: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "r1core.cli", "train", f"run.output_root={root}", f"run.name={name}", *TINY, *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def weights(run_dir: Path, stage: str = "final") -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted((run_dir / stage).glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def test_train_writes_every_artefact_and_resume_is_bit_exact(tmp_path):
    import torch
    import transformers

    train(tmp_path, "straight", "trainer.steps=2")
    run_dir = tmp_path / "straight"
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("accuracy_start", "accuracy_end", "steps", "wall_seconds", "tokens_per_second"):
        assert key in summary, key
    assert summary["steps"] == 2 and summary["tokens_per_second"] > 0
    assert 0.0 <= summary["accuracy_start"] <= 1.0 and 0.0 <= summary["accuracy_end"] <= 1.0
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir())
    assert (run_dir / "config.yaml").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"sft", "train", "eval"} <= {r["phase"] for r in records}
    # Rollouts are sampled in the policy's dtype (float32 here): the engine's log-probs of the
    # sampled tokens equal the trainer's up to kernel rounding.
    for record in (r for r in records if r["phase"] == "train"):
        assert record["logprob_mismatch_max"] < 1e-3, record["logprob_mismatch_max"]
    model = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()

    # The same run interrupted after step 1, then resumed: identical final weights.
    train(tmp_path, "interrupted", "trainer.steps=1")
    train(tmp_path, "interrupted", "trainer.steps=2", "--resume")
    straight, resumed = weights(run_dir), weights(tmp_path / "interrupted")
    cold_start = weights(run_dir, "sft")
    assert any(not torch.equal(straight[name], cold_start[name]) for name in straight), "RL did not change the model"
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    resumed_log = (tmp_path / "interrupted" / "metrics.jsonl").read_text().splitlines()
    train_steps = [json.loads(line)["step"] for line in resumed_log if json.loads(line)["phase"] == "train"]
    assert train_steps == [1, 2]


def test_unknown_key_fails_before_any_work(tmp_path):
    command = [sys.executable, "-m", "r1core.cli", "train", f"run.output_root={tmp_path}", "trainer.stepz=3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "trainer.stepz" in result.stderr
    assert not any(tmp_path.iterdir())
