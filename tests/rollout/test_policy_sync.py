"""``sync_policy_weights`` from a Megatron policy split over ranks (torchrun, gloo, CPU).

Rank 0 holds a vLLM engine; after the collective sync its greedy tokens and log-probs
must equal, bitwise, those of a fresh engine started on ``policy.export_hf`` of the same
weights, and its staging buffer must be the bucket, smaller than the largest tensor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rollout.conftest import MAX_MODEL_LEN, greedy

pytest.importorskip("megatron.core", reason="the policy needs megatron-core (extra policy)")

HERE = Path(__file__).parent
REPO_ROOT = HERE.parents[1]
#: Smaller than the tiny models' embedding (320 x 128 fp32 = 160 KiB) and MLP weights
#: (128 KiB): those travel in pieces, also across the pipeline stages.
BUCKET_BYTES = 48 * 1024

#: Rank 0's engine runs in its own process: an in-process vLLM engine inside a torchrun
#: process adopts the trainer's default process group and hangs creating its groups
#: (``VLLMRollout`` refuses that combination with a clear error).
LAYOUTS = {
    # name: (model kind, tensor, pipeline, expert, processes)
    "pp2_tied": ("qwen2_tied", 1, 2, 1, 2),
    "pp2_dense": ("qwen2", 1, 2, 1, 2),
    "ep2_moe": ("qwen3_moe", 1, 1, 2, 2),
    "tp2_pp2_dense": ("qwen2", 2, 2, 1, 4),
}


def _launch(initial_dir: str, out_dir: Path, tensor: int, pipeline: int, expert: int,
            procs: int, engine_mode: str, senders: str = "one") -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", VLLM_LOGGING_LEVEL="WARNING",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *sys.path]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
           "--master_port", str(29600 + os.getpid() % 1000),
           str(HERE / "_policy_sync_worker.py"), initial_dir, str(out_dir), str(tensor),
           str(pipeline), str(expert), engine_mode, str(BUCKET_BYTES), senders]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    if senders == "one":
        return json.loads((out_dir / "result.json").read_text())
    return {path.stem: json.loads(path.read_text()) for path in sorted(out_dir.glob("result_*.json"))}


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_multi_rank_sync_equals_fresh_engine_on_export(layout, checkpoints, tmp_path):
    from r1core.rollout import VLLMRollout

    kind, tensor, pipeline, expert, procs = LAYOUTS[layout]
    result = _launch(checkpoints(kind).initial_dir, tmp_path, tensor, pipeline, expert, procs,
                     "own_process")
    with VLLMRollout(tmp_path / "export", max_model_len=MAX_MODEL_LEN,
                     dtype="float32") as fresh:
        reference = [[tokens, logprobs] for tokens, logprobs in greedy(fresh)]
    assert result["after"] != result["before"], "the update did not change the outputs"
    assert result["after"] == reference  # tokens and float log-probs, exactly
    stats = result["stats"]
    assert stats["version"] == result["engine_version"] == "step-1"
    # The staging buffer is the bucket, though the embedding alone is 3x larger.
    assert stats["staging_bytes"] == BUCKET_BYTES
    assert stats["num_bytes"] > 3 * BUCKET_BYTES and stats["num_buckets"] > 3
    # The vocabulary matrices (the untied LM head from the last stage, point to point)
    # were written into the engine's live weights piece by piece.
    vocabulary = ["model.embed_tokens.weight"] + ([] if kind == "qwen2_tied" else ["lm_head.weight"])
    assert sorted(result["summary"]["written_in_place"]) == sorted(vocabulary)


#: Two data-parallel replicas, each leader with its own engine.
REPLICA_LAYOUTS = {
    # name: (model kind, tensor, pipeline, expert, processes, the leaders)
    "dp2_dense": ("qwen2", 1, 1, 1, 2, [0, 1]),
    # The expert-parallel group spans both replicas: the two senders' gathers must meet.
    "dp2_ep2_moe": ("qwen3_moe", 1, 1, 2, 2, [0, 1]),
    # Both replicas' last stages stream to their own leader at the same time.
    "dp2_pp2_dense": ("qwen2", 1, 2, 1, 4, [0, 1]),
}


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("layout", REPLICA_LAYOUTS)
def test_one_sender_per_data_parallel_replica(layout, checkpoints, tmp_path):
    """Every replica leader holds an engine and all sync in the same call; each engine
    must then equal a fresh engine on the export (a sender left out, or fed the other
    replica's stream, keeps or corrupts its old outputs)."""
    from r1core.rollout import VLLMRollout

    kind, tensor, pipeline, expert, procs, leaders = REPLICA_LAYOUTS[layout]
    results = _launch(checkpoints(kind).initial_dir, tmp_path, tensor, pipeline, expert, procs,
                      "own_process", senders="replicas")
    assert sorted(results) == [f"result_{rank}" for rank in leaders]
    with VLLMRollout(tmp_path / "export", max_model_len=MAX_MODEL_LEN,
                     dtype="float32") as fresh:
        reference = [[tokens, logprobs] for tokens, logprobs in greedy(fresh)]
    for name, result in results.items():
        assert result["after"] != result["before"], f"{name}: the update did not change the outputs"
        assert result["after"] == reference, name
        assert result["stats"]["version"] == result["engine_version"] == "step-1"
        assert result["stats"]["num_bytes"] > 3 * BUCKET_BYTES


def _layout(holder: bool, model_ranks: list[int]) -> dict:
    return {"holder": holder, "model_ranks": model_ranks}


def test_senders_are_one_rank_or_every_replica_leader():
    from r1core.rollout.policy_sync import _senders

    # DP=2 x TP=2: replicas {0, 1} and {2, 3}, leaders 0 and 2.
    def ranks(*holders: int) -> list[dict]:
        return [_layout(r in holders, [0, 1] if r < 2 else [2, 3]) for r in range(4)]

    assert _senders(ranks(3)) == [3]  # one engine: any rank
    assert _senders(ranks(0, 2)) == [0, 2]
    for holders in ((), (0, 1), (0, 3), (0, 1, 2)):
        with pytest.raises(ValueError, match=r"leader \(model-parallel rank 0\) of every data-parallel replica, i\.e\. ranks \[0, 2\]"):
            _senders(ranks(*holders))


def test_single_process_sync_needs_the_engine():
    """Without a multi-rank process group the one process must hold the engine."""
    import torch.distributed as dist

    from r1core.rollout import sync_policy_weights

    if dist.is_initialized() and dist.get_world_size() > 1:
        pytest.skip("runs outside a multi-rank job")
    with pytest.raises(ValueError, match="needs the rollout engine"):
        sync_policy_weights(object(), None)
