"""Run by test_distributed_helpers.py under ``torchrun --nproc_per_node 2``: the GRPO sampling
phase of two data-parallel replicas over gloo, with the scripted engine of
test_grpo_sampling.py. Each rank writes what it sampled to ``OUT.rank<r>``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from test_grpo_sampling import ScriptedRollout, Stream, score_by_length  # noqa: E402

from r1core.algos import AlgorithmConfig  # noqa: E402
from r1core.algos.sampling import DynamicSamplingConfig, OverlongConfig  # noqa: E402
from r1core.batch import Prompt  # noqa: E402
from r1core.parallel import Topology  # noqa: E402
from r1core.trainer.grpo import GRPOConfig, GRPOTrainer  # noqa: E402


def sample(golds: list[str], topology: Topology) -> dict:
    prompts = [Prompt([index + 1], gold, index) for index, gold in enumerate(golds)]
    cfg = GRPOConfig(samples_per_prompt=4, max_response_tokens=4, prompts_per_step=4, mini_batches=3)
    algorithm = AlgorithmConfig.from_preset("dapo", dynamic_sampling=DynamicSamplingConfig(enabled=True, max_refill_rounds=2),
                                       overlong=OverlongConfig())
    trainer = GRPOTrainer(cfg, algorithm, policy=None, rollout=ScriptedRollout(),
                          prompts=Stream(prompts), decode=lambda ids: "x" * len(ids), score=score_by_length,
                          topology=topology)
    batch, metrics = trainer._sample(0, budget=4)
    weights = batch.loss_weights
    return {
        "groups": sorted(set(batch.group_index.tolist())),
        "prompts": sorted({tokens[0] for tokens in batch.prompt_tokens}),
        "tries": metrics["dynamic_sampling/rounds"],
        "num_samples": len(batch),
        "loss_weights": None if weights is None else weights.tolist(),
        "mini_batches": [len(rows) for rows in trainer._mini_batch_rows(list(range(len(batch))))],
        "stream_position": trainer.prompts.position,
    }


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    topology = Topology(world_rank=rank, world_size=2, dp_rank=rank, dp_size=2)
    out = {
        # Round 1: replica 1 keeps 2 groups, replica 0 none; round 2: replica 0 one; round 3:
        # replica 1 two more. Pooled: 5 groups, the first 4 split evenly.
        "refill": sample(["9", "9", "2", "3", "2", "9", "9", "9"], topology),
        # Replica 0 never sees signal; replica 1 finds the whole batch in two rounds.
        "lopsided": sample(["9", "9", "2", "3", "9", "9", "2", "3"], topology),
        # One group with signal in three rounds: fewer than replicas.
        "scarce": sample(["9", "9", "2"] + ["9"] * 9, topology),
    }
    Path(f"{sys.argv[1]}.rank{rank}").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
