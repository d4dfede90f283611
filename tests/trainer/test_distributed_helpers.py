"""Data-parallel helpers of the trainer: batch sharding, the prompts_per_step check, metric
reduction over replicas, and the sampling phase of two replicas kept in lockstep (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r1core.parallel import LayoutError, check_divisible, even_slices, shard, shard_slice, without_torchrun_env
from r1core.trainer.distributed import reduce_step_metrics

HERE = Path(__file__).parent


def test_shards_are_contiguous_disjoint_and_cover_the_batch():
    items = list(range(12))
    parts = [shard(items, rank, 3) for rank in range(3)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert shard_slice(8, 1, 2) == slice(4, 8)
    with pytest.raises(ValueError, match="rank 2 outside"):
        shard_slice(8, 2, 2)
    # Evaluation shards need not be even: sizes differ by at most one, nothing is lost.
    slices = even_slices(7, 3)
    assert [list(range(7))[s] for s in slices] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [s.stop - s.start for s in even_slices(2, 4)] == [1, 1, 0, 0]


def test_batch_not_divisible_names_both_numbers():
    assert check_divisible(32, 4, what="trainer.prompts_per_step") == 8
    with pytest.raises(LayoutError, match=r"trainer.prompts_per_step=6 is not divisible by the data-parallel size 4"):
        check_divisible(6, 4, what="trainer.prompts_per_step")


def test_start_distributed_refuses_the_batch_before_any_process_group(monkeypatch, tmp_path):
    from r1core.config import ConfigError, RunConfig, load_config
    from r1core.commands.train import start_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    cfg = load_config(RunConfig, None, [f"run.output_root={tmp_path}", "trainer.prompts_per_step=5"])
    with pytest.raises(ConfigError, match="prompts_per_step=5 is not divisible by the data-parallel size 2"):
        start_distributed(cfg)
    # The cold start's batch is split over the replicas too.
    cfg = load_config(RunConfig, None, [f"run.output_root={tmp_path}", "trainer.prompts_per_step=4", "sft.batch_size=7"])
    with pytest.raises(ConfigError, match="sft.batch_size=7 is not divisible by the data-parallel size 2"):
        start_distributed(cfg)
    assert not torch.distributed.is_initialized()


def test_metrics_reduce_to_the_whole_batch():
    torch.manual_seed(0)
    rewards = [torch.rand(8), torch.rand(24)]
    lengths = [torch.randint(1, 40, (8,)).float(), torch.randint(1, 40, (24,)).float()]
    per_rank = [
        {
            "reward_mean": float(r.mean()), "reward_std": float(r.std()), "num_samples": float(len(r)),
            "response_length_mean": float(n.mean()), "response_length_max": float(n.max()),
            "train_tokens": float(n.sum()), "step_s": step_s, "generate_s": step_s / 2,
            "tokens_per_second": float(n.sum()) / step_s, "reward_mean_all": float(r[:4].mean()),
            "grad_norm": 0.5, "dynamic_sampling/groups_dropped": dropped,
        }
        for r, n, step_s, dropped in zip(rewards, lengths, (2.0, 4.0), (1.0, 3.0))
    ]
    out = reduce_step_metrics(per_rank)
    all_rewards, all_lengths = torch.cat(rewards), torch.cat(lengths)
    assert out["num_samples"] == 32 and out["dynamic_sampling/groups_dropped"] == 4
    assert out["reward_mean"] == pytest.approx(float(all_rewards.mean()), rel=1e-6)
    assert out["reward_std"] == pytest.approx(float(all_rewards.std()), rel=1e-5)
    assert out["response_length_mean"] == pytest.approx(float(all_lengths.mean()), rel=1e-6)
    assert out["response_length_max"] == float(all_lengths.max())
    assert out["train_tokens"] == float(all_lengths.sum())
    assert out["step_s"] == 4.0 and out["generate_s"] == 2.0  # the slowest replica
    assert out["tokens_per_second"] == pytest.approx(float(all_lengths.sum()) / 4.0)
    assert out["reward_mean_all"] == pytest.approx((per_rank[0]["reward_mean_all"] + per_rank[1]["reward_mean_all"]) / 2)
    assert out["grad_norm"] == 0.5
    assert reduce_step_metrics(per_rank[:1]) == per_rank[0]
    with pytest.raises(ValueError, match="replica 1 reports metrics"):
        reduce_step_metrics([per_rank[0], {"reward_mean": 1.0}])


def test_engine_processes_do_not_inherit_torchrun_variables(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_PORT", "29999")
    with without_torchrun_env():
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('RANK'), os.environ.get('MASTER_PORT'))"],
                               capture_output=True, text=True, check=True)
        assert child.stdout.split() == ["None", "None"]
    assert os.environ["RANK"] == "1" and os.environ["MASTER_PORT"] == "29999"


@pytest.mark.distributed
def test_replicas_sample_their_share_and_refill_in_lockstep(tmp_path):
    out = tmp_path / "sampling"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(29200 + os.getpid() % 500), str(HERE / "dp_sampling_worker.py"), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    rank0, rank1 = (json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1))

    # Both replicas ran the same rounds; the kept groups were pooled and the first four (in
    # generation order) split evenly, whatever replica had found them.
    refill0, refill1 = rank0["refill"], rank1["refill"]
    assert refill0["tries"] == refill1["tries"] == 3
    assert refill0["groups"] == [2, 3] and refill0["prompts"] == [3, 4]
    assert refill1["groups"] == [4, 10] and refill1["prompts"] == [3, 5]
    assert refill0["loss_weights"] == refill1["loss_weights"] == [1.0] * 8
    assert refill0["stream_position"] == refill1["stream_position"] == 12
    # Exactly mini_batches optimiser steps on each replica.
    assert refill0["mini_batches"] == refill1["mini_batches"] == [3, 3, 2]

    # Replica 1 alone found a full batch in two rounds: the refill stops there (not when
    # replica 0 is full), and replica 0 trains on half of replica 1's groups.
    lopsided0, lopsided1 = rank0["lopsided"], rank1["lopsided"]
    assert lopsided0["tries"] == lopsided1["tries"] == 2
    assert lopsided0["groups"] == [2, 3] and lopsided1["groups"] == [6, 7]

    # One group for two replicas: replica 1 repeats it at loss weight 0 to step in lockstep.
    scarce0, scarce1 = rank0["scarce"], rank1["scarce"]
    assert scarce0["tries"] == scarce1["tries"] == 3
    assert scarce0["groups"] == scarce1["groups"] == [2]
    assert scarce0["loss_weights"] == [1.0] * 4 and scarce1["loss_weights"] == [0.0] * 4

class CountingSource:
    """A weight source that records how far its (collective) iterator was consumed."""

    def __init__(self, count: int) -> None:
        self.count, self.consumed = count, 0

    def iter_hf_weights(self):
        for index in range(self.count):
            self.consumed = index + 1
            yield f"w{index}", torch.zeros(1)


class RecordingEngine:
    def __init__(self) -> None:
        self.names: list[str] = []

    def sync_weights(self, source) -> None:
        self.names = [name for name, _ in source.iter_hf_weights()]


def test_weight_sync_in_one_process_feeds_the_engine():
    from r1core.parallel import Topology
    from r1core.trainer.grpo import sync_weights

    engine, source = RecordingEngine(), CountingSource(5)
    sync_weights(source, engine, Topology())
    assert engine.names == [f"w{i}" for i in range(5)]
    # Under torchrun the engine-less ranks take part through sync_policy_weights (tested
    # with real process groups in tests/rollout/test_policy_sync.py and
    # tests/trainer/test_train_distributed.py); one process must hold the engine.
    with pytest.raises(ValueError, match="needs the rollout engine"):
        sync_weights(source, None, Topology())


def test_last_stage_broadcast_is_identity_without_pipeline():
    from r1core.parallel import Topology

    topology = Topology()
    assert topology.is_last_stage and topology.broadcast_from_last_stage({"loss": 1.5}) == {"loss": 1.5}
    assert not Topology(pipeline=2, pp_rank=0).is_last_stage and Topology(pipeline=2, pp_rank=1).is_last_stage


def test_mean_metrics_averages_steps_into_floats():
    from r1core.trainer.distributed import mean_metrics

    steps = [{"loss": torch.tensor(1.0), "lr": 1e-3}, {"loss": torch.tensor([3.0]), "lr": torch.tensor(1e-3)}]
    out = mean_metrics(steps)
    assert out == {"loss": 2.0, "lr": pytest.approx(1e-3)} and all(type(v) is float for v in out.values())
    with pytest.raises(ValueError, match="no metrics"):
        mean_metrics([])
