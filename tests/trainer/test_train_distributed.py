"""``r1core train`` under torchrun (2 processes, gloo, CPU) against the same run in one process.

Data parallelism is gradient accumulation spread over replicas: a DP=2 run whose replicas
each train on one micro-batch of ``micro_batch_size`` samples must take the same optimiser
step as one process that accumulates the same two micro-batches. The check therefore
fails if the replicas train on the wrong share of the global batch (overlapping or
shifted groups), if gradients are summed instead of averaged, or if the rollouts of a
replica depend on how many replicas there are. Tensor parallelism (one engine on the
leader, samples broadcast to the other rank) must give the single-process step as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.test_train_pipeline import weights

pytest.importorskip("vllm")
pytest.importorskip("megatron.core")
pytest.importorskip("math_verify")

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

TINY = [
    "embedded.vocab_size=64",
    "embedded.model.hidden_size=64",
    "embedded.model.num_layers=1",
    "embedded.model.num_attention_heads=2",
    "embedded.model.num_key_value_heads=2",  # TP=2 splits the KV heads
    "embedded.model.intermediate_size=128",
    "data.num_train=64",
    "data.num_eval=6",  # not a multiple of 4: uneven evaluation shards
    "sft.epochs=1",
    "sft.batch_size=32",
    "sft.micro_batch_size=16",  # one process accumulates the two replicas' shares
    "trainer.prompts_per_step=4",
    "trainer.samples_per_prompt=4",
    "trainer.micro_batch_size=8",  # = one replica's 2 groups x 4 samples
    "trainer.max_response_tokens=16",
    "eval.every=1",
    "eval.k=2",
    "eval.max_tokens=16",
    "checkpoint.interval=1",
    "reward.num_workers=1",
    "rollout.max_model_len=80",
    "logging.rollouts=true",
    # Rewards that differ within a group, so every step really moves the weights.
    "reward.weights.length_penalty=1.0",
    "reward.weights.r1_format=0.5",
]


def _env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join(sys.path))


def train(root: Path, name: str, *extra: str, procs: int = 1) -> subprocess.CompletedProcess:
    args = ["train", f"run.output_root={root}", f"run.name={name}", *TINY, *extra]
    if procs == 1:
        command = [sys.executable, "-m", "r1core.cli", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                   "--master_port", str(29700 + os.getpid() % 500), "-m", "r1core.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-8000:]
    return result


# The tensors of a run's Hugging Face checkpoint (``final``, ``sft`` or ``init``).
final_weights = weights


def rollouts(run_dir: Path) -> dict[str, list[dict]]:
    return {
        path.stem: [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted((run_dir / "rollouts").glob("rank_*.jsonl"))
    }


def assert_step_matches(reference: dict, candidate: dict, start: dict, atol: float = 2e-6) -> None:
    """The candidate's update equals the reference's, and the update is not vacuous."""
    import torch

    assert reference.keys() == candidate.keys()
    moved = max(float((reference[k] - start[k]).abs().max()) for k in reference)
    assert moved > 1e-4, f"the RL step barely changed the weights ({moved})"
    for name in reference:
        torch.testing.assert_close(candidate[name], reference[name], atol=atol, rtol=1e-5, msg=name)


def train_metrics(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["phase"] == "train"]


def test_data_parallel_run_matches_one_process_and_resumes(tmp_path):
    import torch

    train(tmp_path, "single", "trainer.steps=1")
    result = train(tmp_path, "dp2", "trainer.steps=2", procs=2)
    single, dp2 = tmp_path / "single", tmp_path / "dp2"

    # Global rank 0 alone reports: one summary line on stdout, one record per step.
    assert result.stdout.count('"accuracy_start"') == 1, result.stdout[-2000:]
    records = [json.loads(line) for line in (dp2 / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["phase"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), keys
    assert [s for p, s in keys if p == "train"] == [1, 2] and [s for p, s in keys if p == "eval"] == [0, 1, 2]
    assert len(list((dp2 / "tensorboard").glob("events.out.tfevents*"))) == 1
    assert json.loads((dp2 / "summary.json").read_text())["steps"] == 2
    assert (dp2 / "curves.png").read_bytes()[:4] == b"\x89PNG"
    train_records = [r for r in records if r["phase"] == "train"]
    assert all(r["num_samples"] == 16 for r in train_records)  # reduced over both replicas
    assert all(r["logprob_mismatch_max"] < 1e-3 for r in train_records)

    # The replicas trained on disjoint halves of each step's global batch, and together on
    # exactly what one process trained on.
    ranks = rollouts(dp2)
    assert sorted(ranks) == ["rank_00000", "rank_00001"]
    for step in (1, 2):
        groups = [{r["group"] for r in ranks[name] if r["step"] == step} for name in sorted(ranks)]
        assert groups == [{0, 1}, {2, 3}], groups
    one = {(r["group"], tuple(r["prompt_ids"]), tuple(r["response_ids"])) for r in rollouts(single)["rank_00000"]}
    both = {(r["group"], tuple(r["prompt_ids"]), tuple(r["response_ids"]))
            for name in ranks for r in ranks[name] if r["step"] == 1}
    assert both == one

    # The first update equals the one-process update of the same global batch.
    state = lambda run: torch.load(run / "checkpoints" / "step_000001" / "rank_00000.pt", weights_only=True)["policy"]["model"]  # noqa: E731
    dp_state, single_state = state(dp2), state(single)
    start = final_weights(single, "sft")
    for name, tensor in single_state.items():
        torch.testing.assert_close(dp_state[name], tensor, atol=2e-6, rtol=1e-5, msg=name)
    rank1 = torch.load(dp2 / "checkpoints" / "step_000001" / "rank_00001.pt", weights_only=True)["policy"]["model"]
    for name, tensor in dp_state.items():  # replicas hold identical weights after the step
        assert torch.equal(rank1[name], tensor), name
    # Adam's first step hardly depends on the gradient's scale, so the reduced metrics check
    # the averaging itself: a sum over replicas would double the gradient norm.
    single_step = train_metrics(single)[0]
    for key in ("grad_norm", "loss", "reward_mean", "reward_std", "response_length_mean", "num_samples", "train_tokens"):
        assert train_records[0][key] == pytest.approx(single_step[key], rel=1e-5, abs=1e-7), key
    sft_dp, sft_single = final_weights(dp2, "sft"), final_weights(single, "sft")
    for name in sft_single:  # the cold start sharded its batches the same way
        torch.testing.assert_close(sft_dp[name], sft_single[name], atol=2e-6, rtol=1e-5, msg=name)
    assert max(float((final_weights(single)[k] - start[k]).abs().max()) for k in start) > 1e-4

    # Interrupted after step 1 and resumed under DP=2: the same weights as straight through.
    train(tmp_path, "dp2_resumed", "trainer.steps=1", procs=2)
    train(tmp_path, "dp2_resumed", "trainer.steps=2", "--resume", procs=2)
    straight, resumed = final_weights(dp2), final_weights(tmp_path / "dp2_resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_tensor_parallel_run_matches_one_process(tmp_path):
    train(tmp_path, "single", "trainer.steps=1", "logging.rollouts=false")
    train(tmp_path, "tp2", "trainer.steps=1", "parallel.tensor=2", procs=2)
    # One engine, on the leader; the other rank trained on the broadcast samples.
    assert sorted(rollouts(tmp_path / "tp2")) == ["rank_00000"]
    for ours, theirs in zip(train_metrics(tmp_path / "tp2"), train_metrics(tmp_path / "single"), strict=True):
        for key in ("grad_norm", "loss", "reward_mean", "num_samples", "train_tokens"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), key
    # Tensor parallelism changes the order of the reductions; Adam turns that rounding into
    # differences of ~1e-6 on the few elements whose gradient is ~0 (seen: 3 of ~25k after
    # the cold start). A wrong shard or a missing broadcast moves every element by ~lr.
    assert_step_matches(final_weights(tmp_path / "single"), final_weights(tmp_path / "tp2"),
                        final_weights(tmp_path / "single", "sft"), atol=1e-5)


def test_batch_not_divisible_by_data_parallel_size_fails_before_any_work(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(29300 + os.getpid() % 500), "-m", "r1core.cli", "train",
               f"run.output_root={tmp_path}", "run.name=odd", "trainer.prompts_per_step=3"]
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode != 0
    assert "trainer.prompts_per_step=3 is not divisible by the data-parallel size 2" in result.stderr
    assert not (tmp_path / "odd" / "metrics.jsonl").exists()


def test_data_parallel_dynamic_sampling_and_ppo_epochs_stay_in_lockstep(tmp_path):
    # Filtering drops groups unevenly across replicas, and several optimiser steps per batch
    # (old log-probs, shuffled mini-batches) multiply the gradient all-reduces: a replica
    # that called train_step a different number of times would hang the run.
    # Outcomes are accuracy and format only (no length reward), so groups whose samples all
    # fail alike are uniform and dropped; DAPO's overlong shaping is on too, and groups are
    # filtered on their unshaped outcomes.
    train(tmp_path, "dynamic", "trainer.steps=2", "algorithm.dynamic_sampling.enabled=true",
          "algorithm.dynamic_sampling.max_refill_rounds=2", "trainer.epochs_per_step=2", "trainer.mini_batches=2",
          "eval.every=2", "reward.weights.length_penalty=0.0", "sft.epochs=10", "trainer.prompts_per_step=8",
          "algorithm.overlong.buffer_fraction=0.5", procs=2)
    records = train_metrics(tmp_path / "dynamic")
    assert [r["step"] for r in records] == [1, 2]
    assert sum(r["dynamic_sampling/groups_dropped"] for r in records) > 0, "no group was filtered: the test exercises nothing"
    for record in records:
        assert 1 <= record["dynamic_sampling/rounds"] <= 3
        assert record["num_samples"] % (2 * 4) == 0  # whole groups, the same number per replica
        assert record["num_samples"] <= 8 * 4  # trimmed to prompts_per_step groups
    ranks = rollouts(tmp_path / "dynamic")
    for step in (1, 2):
        mine, theirs = ({r["group"] for r in ranks[name] if r["step"] == step} for name in sorted(ranks))
        assert len(mine) == len(theirs) and not mine & theirs


def test_sft_command_under_data_parallelism_matches_one_process(tmp_path):

    from r1core.trainer.embedded import EmbeddedModelConfig, make_tiny_qwen2, train_tokenizer

    rows = [{"prompt": f"{a}+{b}=?\n<think>", "response": f"{a}+{b}={a + b}</think><answer>{a + b}</answer>"}
            for a in range(4) for b in range(4)]
    tokenizer = train_tokenizer([r["prompt"] + r["response"] for r in rows], tmp_path / "tok", vocab_size=48)
    start = make_tiny_qwen2(tmp_path / "start", tokenizer, EmbeddedModelConfig(
        hidden_size=64, num_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=128))
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = [f"run.output_root={tmp_path}", f"policy.hf_dir={start}", f"sft.traces={traces}", "sft.epochs=1.5",
              "sft.batch_size=8", "sft.micro_batch_size=4"]
    for name, procs in (("single", 1), ("dp2", 2)):
        head = [sys.executable, "-m", "r1core.cli"] if procs == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(29900 + os.getpid() % 90), "-m", "r1core.cli"]
        result = subprocess.run([*head, "sft", f"run.name={name}", *common], capture_output=True, text=True,
                                env=_env(), timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    single, dp2 = tmp_path / "single", tmp_path / "dp2"
    history = [json.loads(line) for line in (dp2 / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [0, 1, 2]  # written once, by rank 0
    reference = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    for ours, theirs in zip(history, reference, strict=True):
        assert ours["nll"] == pytest.approx(theirs["nll"], rel=1e-5) and ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-5)
    assert_step_matches(final_weights(single), final_weights(dp2), final_weights(tmp_path, "start"))
