"""``r1core train`` with pipeline parallelism (torchrun, 2 stages, gloo, CPU) against one process.

A PP=2 run splits the embedded model's two layers over two ranks: the first stage embeds
and runs layer 0, the last runs layer 1, the head and the loss, and the tied embedding's
gradient is summed between them. Cold start and RL must take the same optimiser steps as
one process, and after every step the replica's leader (stage 0) must receive the last
stage's layers into its engine: the second step samples from the synced engine, so a
missing or misplaced stage changes its rollouts, its log-prob mismatch and the final
weights. Rank 0 (stage 0) logs the loss, clip fractions, entropy and log-prob mismatch that
only the last stage computes.
"""

from __future__ import annotations

import json

import pytest

from tests.trainer.test_train_distributed import assert_step_matches, final_weights, train, train_metrics

pytest.importorskip("vllm")
pytest.importorskip("megatron.core")
pytest.importorskip("math_verify")

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

#: Two layers, one per stage; the same model in both runs.
TWO_LAYERS = ["embedded.model.num_layers=2", "trainer.steps=2", "eval.every=2", "logging.rollouts=false"]
#: Metrics the last stage alone computes; rank 0 must log them.
LAST_STAGE = ("loss", "pg_loss", "clip_frac_low", "clip_frac_high", "entropy", "logprob_mismatch_mean",
              "logprob_mismatch_max")


def sft_metrics(run_dir) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["phase"] == "sft"]


def test_pipeline_parallel_run_matches_one_process(tmp_path):
    train(tmp_path, "single", *TWO_LAYERS)
    train(tmp_path, "pp2", *TWO_LAYERS, "parallel.pipeline=2", procs=2)
    single, pp2 = tmp_path / "single", tmp_path / "pp2"

    # Cold start: same steps, and rank 0 logged the last stage's loss.
    ours, theirs = sft_metrics(pp2), sft_metrics(single)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs] and ours
    for mine, reference in zip(ours, theirs):
        for key in ("loss", "nll", "grad_norm"):
            assert mine[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-7), key
    assert_step_matches(final_weights(single, "sft"), final_weights(pp2, "sft"), final_weights(single, "init"),
                        atol=1e-5)

    # RL: every metric of one process is there (the sample broadcast adds its time) and
    # the update metrics agree, step 2 included, which sampled from the synced engine.
    ours, theirs = train_metrics(pp2), train_metrics(single)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs] == [1, 2]
    for mine, reference in zip(ours, theirs):
        assert set(mine) - {"broadcast_s"} == set(reference), set(mine) ^ set(reference)
        for key in (*LAST_STAGE, "grad_norm", "reward_mean", "reward_std", "response_length_mean", "num_samples",
                    "train_tokens"):
            assert mine[key] == pytest.approx(reference[key], rel=1e-4, abs=1e-6), (mine["step"], key)
        # The engine's log-probs are the trainer's: the sync brought both stages' layers.
        assert mine["logprob_mismatch_max"] < 1e-3
    assert_step_matches(final_weights(single), final_weights(pp2), final_weights(single, "sft"), atol=1e-5)
    summary = json.loads((pp2 / "summary.json").read_text())
    assert summary["steps"] == 2 and "accuracy_end" in summary


def test_pipeline_parallel_run_resumes(tmp_path):
    # Interrupted after step 1 and resumed: each stage reloads its own shard, the engine is
    # re-synced from both stages, and step 2 equals the straight run's.
    common = ["embedded.model.num_layers=2", "logging.rollouts=false", "parallel.pipeline=2", "sft.epochs=0",
              "eval.every=10"]
    train(tmp_path, "straight", *common, "trainer.steps=2", procs=2)
    train(tmp_path, "resumed", *common, "trainer.steps=1", procs=2)
    train(tmp_path, "resumed", *common, "trainer.steps=2", "--resume", procs=2)
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert (straight[name] == resumed[name]).all(), name
    assert [r["step"] for r in train_metrics(tmp_path / "resumed")] == [1, 2]
