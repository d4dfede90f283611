"""Processes started by test_checkpoint_manager.py: a tiny training run, a save that gets killed, and
a multi-rank save/load under torchrun with gloo. Run as ``python checkpoint_workers.py MODE``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from r1core.trainer.checkpoint import CheckpointManager
from r1core.trainer.rng import restore_rng_state


class SeededStream:
    """Batch ``i`` is a pure function of (seed, i), so the position is one integer."""

    def __init__(self, seed: int, batch_size: int = 4) -> None:
        self.seed = seed
        self.batch_size = batch_size
        self.next_index = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        generator = np.random.default_rng([self.seed, self.next_index])
        self.next_index += 1
        inputs = torch.from_numpy(generator.standard_normal((self.batch_size, 8)).astype(np.float32))
        return inputs, inputs.sum(dim=1, keepdim=True).sin()

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "next_index": self.next_index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.next_index = state["seed"], state["next_index"]


def train(args: argparse.Namespace) -> None:
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.Dropout(0.2), torch.nn.Tanh(), torch.nn.Linear(32, 1)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    stream = SeededStream(args.seed)
    manager = CheckpointManager(args.dir, keep_last=2)
    start = 0
    if args.resume:
        checkpoint = manager.load_latest()
        assert checkpoint is not None, "nothing to resume from"
        model.load_state_dict(checkpoint.state["model"])
        optimizer.load_state_dict(checkpoint.state["optimizer"])
        stream.load_state_dict(checkpoint.state["data"])
        if not args.skip_rng_restore:
            restore_rng_state(checkpoint.state["rng"])
        start = checkpoint.step
    for step in range(start, args.total):
        inputs, targets = stream.next_batch()
        # Each step draws from every global generator: torch (dropout), numpy and python.
        noise = float(np.random.standard_normal()) * 1e-3 + random.uniform(-1e-3, 1e-3)
        loss = torch.nn.functional.mse_loss(model(inputs + noise), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step + 1 == args.save_at:
            manager.save(
                step + 1,
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "data": stream.state_dict()},
                config_yaml=f"seed: {args.seed}\ntotal: {args.total}\n",
            )
            if args.stop_after_save:
                return
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, args.out)


class BlockWhilePickled:
    """Pickling this announces itself through a file and then hangs, so the test can kill
    the process while ``torch.save`` is half-way through writing a shard."""

    def __init__(self, signal_path: str) -> None:
        self.signal_path = signal_path

    def __reduce__(self):
        Path(self.signal_path).write_text("saving")
        time.sleep(120)
        return (str, ("unreachable",))


def killed_save(args: argparse.Namespace) -> None:
    manager = CheckpointManager(args.dir, keep_last=3)
    manager.save(1, {"weights": torch.arange(1000, dtype=torch.float32)})
    big = torch.ones(2_000_000, dtype=torch.float32)  # 8 MB written before the hang
    manager.save(2, {"weights": big, "blocker": BlockWhilePickled(args.signal)})


def distributed(args: argparse.Namespace) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    manager = CheckpointManager(args.dir, keep_last=2)
    if args.phase == "save":
        torch.manual_seed(100 + rank)
        shard = torch.full((4,), float(rank)) + torch.rand(4)
        for step in (3, 6, 9):
            manager.save(step, {"shard": shard * step, "rank": rank, "data": {"next_index": step * 10 + rank}})
        torch.save({"shard": shard * 9, "next_random": torch.rand(3)}, Path(args.dir) / f"expected_{rank}.pt")
    else:
        checkpoint = manager.load_latest()
        expected = torch.load(Path(args.dir) / f"expected_{rank}.pt")
        assert checkpoint is not None and checkpoint.step == 9, checkpoint
        assert checkpoint.state["rank"] == rank
        assert checkpoint.state["data"] == {"next_index": 90 + rank}
        assert torch.equal(checkpoint.state["shard"], expected["shard"])
        restore_rng_state(checkpoint.state["rng"])
        assert torch.equal(torch.rand(3), expected["next_random"]), "RNG state not restored per rank"
        assert manager.committed_steps() == [6, 9], manager.committed_steps()
        assert checkpoint.meta["world_size"] == world
        # A shard that cannot be written on rank 1 fails the save on every rank (no hang),
        # commits nothing and leaves the earlier checkpoints as they were.
        unpicklable = (lambda: None) if rank == 1 else None
        try:
            manager.save(12, {"shard": torch.zeros(2), "bad": unpicklable})
        except RuntimeError as error:
            assert "checkpoint step 12 not saved: rank 1:" in str(error), str(error)
        else:
            raise AssertionError("a failed shard write did not fail the save")
        dist.barrier()
        assert manager.committed_steps() == [6, 9]
        assert not Path(args.dir, ".tmp_step_000012").exists()
        Path(args.dir, f"verified_{rank}").write_text("ok")
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["train", "killed_save", "distributed"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--total", type=int, default=12)
    parser.add_argument("--save-at", type=int, default=5)
    parser.add_argument("--stop-after-save", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--skip-rng-restore", action="store_true")
    parser.add_argument("--out", default="")
    parser.add_argument("--signal", default="")
    parser.add_argument("--phase", choices=["save", "load"], default="save")
    args = parser.parse_args()
    {"train": train, "killed_save": killed_save, "distributed": distributed}[args.mode](args)


if __name__ == "__main__":
    torch.set_num_threads(1)  # same reduction order in every process: bitwise comparisons
    sys.exit(main())
