"""What ``r1core train`` decides from the data section before building anything: the cold
start (none for a given checkpoint unless asked), the held-out split, and the RL step count
from ``data.epochs``."""

from __future__ import annotations

import json

import pytest

from r1core.commands.train import cold_start_kind, load_training_data, rl_steps
from r1core.config import ConfigError, RunConfig, load_config


def config(*overrides: str) -> RunConfig:
    # Not validated: the checkpoint paths here name no folder (what is decided does not read it).
    return load_config(RunConfig, None, list(overrides), validate=False)


def test_cold_start_is_synthetic_only_for_the_embedded_run():
    assert cold_start_kind(config()) == "synthetic"
    assert cold_start_kind(config("policy.hf_dir=/ckpt")) == "none"
    assert cold_start_kind(config("data.train_files=[gsm8k]")) == "none"
    assert cold_start_kind(config("policy.hf_dir=/ckpt", "sft.traces=t.jsonl")) == "traces"
    assert cold_start_kind(config("policy.hf_dir=/ckpt", "sft.cold_start=synthetic")) == "synthetic"
    with pytest.raises(ConfigError, match="sft.cold_start=synthetic needs the synthetic task"):
        cold_start_kind(config("data.train_files=[gsm8k]", "sft.cold_start=synthetic"))


def test_epochs_set_the_step_count():
    assert rl_steps(config("trainer.steps=7"), 1000) == 7
    assert rl_steps(config("data.epochs=2", "trainer.prompts_per_step=32"), 100) == 7  # ceil(200 / 32)
    assert rl_steps(config("data.epochs=0.01", "trainer.prompts_per_step=32"), 100) == 1


def test_training_data_from_files_and_benchmarks(tmp_path):
    path = tmp_path / "extra.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) + "\n" for i in range(20)))
    train, held = load_training_data(config(f"data.train_files=[{path}]", "data.num_eval=5").data)
    assert len(train) == 15 and len(held) == 5 and train[0].answer == "0"
    train, held = load_training_data(config(f"data.train_files=[{path}, amc23]", "data.eval_files=[aime24]").data)
    assert len(train) == 60 and len(held) == 30 and held[0].id.startswith("aime24/test/")
    train, held = load_training_data(config("data.train_files=[gsm8k]", "data.num_eval=0").data)
    assert len(train) == 7473 and held == []
