"""Checkpoints: atomic commit, rotation, bit-exact resume in a fresh process, kill safety,
and the multi-rank protocol under torchrun with gloo."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from r1core.trainer.checkpoint import CheckpointManager, step_dirname
from r1core.trainer.rng import capture_rng_state, restore_rng_state

WORKERS = Path(__file__).with_name("checkpoint_workers.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), env.get("PYTHONPATH")]))
    return env


def _worker(*args: str, timeout: float = 120) -> None:
    subprocess.run([sys.executable, str(WORKERS), *args], check=True, env=_env(), timeout=timeout)


def test_save_commits_atomically_and_rotates(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        path = manager.save(step, {"value": torch.tensor([float(step)])}, config_yaml="lr: 0.1\nname: x\n")
        assert path == tmp_path / step_dirname(step)
    assert manager.committed_steps() == [20, 30]
    assert not (tmp_path / step_dirname(10)).exists()
    assert (tmp_path / "latest").read_text().strip() == "step_000030"
    assert sorted(p.name for p in (tmp_path / "step_000030").iterdir()) == [
        "config.yaml",
        "meta.json",
        "rank_00000.pt",
    ]
    meta = json.loads((tmp_path / "step_000030" / "meta.json").read_text())
    assert meta["step"] == 30 and meta["world_size"] == 1
    checkpoint = manager.load_latest()
    assert checkpoint.step == 30
    assert torch.equal(checkpoint.state["value"], torch.tensor([30.0]))
    assert "lr: 0.1" in checkpoint.config_yaml
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_load_latest_is_none_for_an_empty_directory(tmp_path):
    assert CheckpointManager(tmp_path / "new").load_latest() is None


def test_stale_pointer_and_leftovers_are_handled(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=0)
    manager.save(1, {"x": torch.zeros(1)})
    manager.save(2, {"x": torch.ones(1)})
    # A kill between the commit rename and the pointer update leaves `latest` stale: the
    # complete newer checkpoint must still win.
    (tmp_path / "latest").write_text("step_000001\n")
    # Leftovers of killed saves and rotations, and a step dir without meta.json.
    (tmp_path / ".tmp_step_000003").mkdir()
    (tmp_path / ".tmp_step_000003" / "rank_00000.pt.partial").write_bytes(b"\0" * 10)
    (tmp_path / ".trash_step_000000").mkdir()
    (tmp_path / "step_000004").mkdir()
    fresh = CheckpointManager(tmp_path, keep_last=0)
    assert not (tmp_path / ".tmp_step_000003").exists()
    assert not (tmp_path / ".trash_step_000000").exists()
    assert fresh.committed_steps() == [1, 2]
    assert torch.equal(fresh.load_latest().state["x"], torch.ones(1))


def test_resaving_a_step_replaces_it(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(5, {"x": torch.zeros(2)})
    manager.save(5, {"x": torch.full((2,), 3.0)})
    assert manager.committed_steps() == [5]
    assert torch.equal(manager.load(5).state["x"], torch.full((2,), 3.0))


def test_rng_state_round_trip_restores_every_generator():
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    state = capture_rng_state()
    first = (random.random(), float(np.random.standard_normal()), torch.rand(2))
    restore_rng_state(state)
    second = (random.random(), float(np.random.standard_normal()), torch.rand(2))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_load_refuses_another_world_size(tmp_path):
    CheckpointManager(tmp_path).save(1, {"x": torch.zeros(1)})
    meta_path = tmp_path / "step_000001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["world_size"] = 4
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="saved by 4 ranks; this run has 1"):
        CheckpointManager(tmp_path).load(1)


def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    """N steps straight vs. k steps, stop, resume from k in a new process, N steps."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    _worker("train", "--dir", str(straight / "ckpt"), "--out", str(straight / "final.pt"))
    _worker("train", "--dir", str(interrupted / "ckpt"), "--stop-after-save")
    assert not (interrupted / "final.pt").exists()
    _worker("train", "--dir", str(interrupted / "ckpt"), "--resume", "--out", str(interrupted / "final.pt"))
    # Negative control: the same resume without restoring the RNG states must differ, or
    # the comparison above could not detect a missing RNG restore.
    _worker(
        "train", "--dir", str(interrupted / "ckpt"), "--resume", "--skip-rng-restore",
        "--out", str(tmp_path / "no_rng.pt"),
    )
    a = torch.load(straight / "final.pt")
    b = torch.load(interrupted / "final.pt")
    c = torch.load(tmp_path / "no_rng.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"parameter {name} differs after resume"
    for index, state in a["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state[key], b["optimizer"]["state"][index][key]), (index, key)
    assert any(not torch.equal(t, c["model"][n]) for n, t in a["model"].items())


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    directory, signal_file = tmp_path / "ckpt", tmp_path / "saving"
    process = subprocess.Popen(
        [sys.executable, str(WORKERS), "killed_save", "--dir", str(directory), "--signal", str(signal_file)],
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert process.poll() is None, "worker exited before reaching the second save"
            assert time.monotonic() < deadline, "worker never reached the second save"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    # The kill hit inside torch.save: a started shard in the temp dir, nothing committed.
    assert (directory / ".tmp_step_000002" / "rank_00000.pt.partial").exists()
    assert not (directory / "step_000002").exists()
    assert (directory / "latest").read_text().strip() == "step_000001"

    manager = CheckpointManager(directory)
    assert not (directory / ".tmp_step_000002").exists()
    checkpoint = manager.load_latest()
    assert checkpoint.step == 1
    assert torch.equal(checkpoint.state["weights"], torch.arange(1000, dtype=torch.float32))


@pytest.mark.distributed
def test_two_ranks_save_and_resume_with_gloo(tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(WORKERS), "distributed", "--dir", str(tmp_path),
    ]
    subprocess.run([*command, "--phase", "save"], check=True, env=_env(), timeout=240)
    step_dir = tmp_path / "step_000009"
    assert sorted(p.name for p in step_dir.iterdir()) == ["meta.json", "rank_00000.pt", "rank_00001.pt"]
    assert json.loads((step_dir / "meta.json").read_text())["world_size"] == 2
    subprocess.run([*command, "--phase", "load"], check=True, env=_env(), timeout=240)
    assert (tmp_path / "verified_0").exists() and (tmp_path / "verified_1").exists()
    # A single process must not silently load one shard of a two-rank checkpoint.
    with pytest.raises(ValueError, match="saved by 2 ranks"):
        CheckpointManager(tmp_path).load_latest()


def test_run_config_is_stored_and_reloads_equal(tmp_path):
    from r1core.config import RunConfig, dump_config, load_config

    config = load_config(RunConfig, None, ["parallel.tensor=2", "run.name=ckpt-test"])
    manager = CheckpointManager(tmp_path)
    path = manager.save(3, {"x": torch.zeros(1)}, config_yaml=dump_config(config))
    assert load_config(RunConfig, path / "config.yaml") == config


def test_cuda_rng_states_need_the_same_devices():
    state = capture_rng_state()
    state["torch_cuda"] = [torch.zeros(16, dtype=torch.uint8)] * (torch.cuda.device_count() + 1)
    with pytest.raises(ValueError, match="RNG states of .* CUDA devices"):
        restore_rng_state(state)


def test_rng_key_collision_is_refused(tmp_path):
    with pytest.raises(ValueError, match="already has an 'rng' entry"):
        CheckpointManager(tmp_path).save(1, {"rng": 1})


def test_a_failed_write_commits_nothing(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"x": torch.ones(1)})
    with pytest.raises(RuntimeError, match="checkpoint step 2 not saved: rank 0: .*lambda"):
        manager.save(2, {"x": torch.zeros(1), "bad": lambda: None})
    assert manager.committed_steps() == [1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp_")]
    assert torch.equal(manager.load_latest().state["x"], torch.ones(1))


def test_meta_records_each_rank_files_size_and_sha256(tmp_path):
    import hashlib

    manager = CheckpointManager(tmp_path)
    path = manager.save(5, {"value": torch.arange(10.0)})
    meta = json.loads((path / "meta.json").read_text())
    shard = (path / "rank_00000.pt").read_bytes()
    assert meta["checksums"]["rank_00000.pt"] == {"bytes": len(shard), "sha256": hashlib.sha256(shard).hexdigest()}
    assert manager.damage(5) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove", "meta"])
def test_a_damaged_newest_checkpoint_is_named_and_the_newest_intact_one_used(tmp_path, damage):
    from r1core.trainer.checkpoint import CheckpointDamagedError

    manager = CheckpointManager(tmp_path, keep_last=0)
    for step in (1, 2, 3):
        manager.save(step, {"value": torch.full((1000,), float(step))})
    shard = tmp_path / step_dirname(3) / "rank_00000.pt"
    if damage == "truncate":  # a copy cut short
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "flip":  # same size, one bit wrong
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 1
        shard.write_bytes(bytes(data))
    elif damage == "remove":
        shard.unlink()
    else:
        (tmp_path / step_dirname(3) / "meta.json").write_text("{")
    step, damaged = manager.newest_intact_step()
    assert step == 2
    assert [s for s, _ in damaged] == [3]
    expected = {"truncate": "holds 100 bytes", "flip": "does not match its SHA-256", "remove": "is missing",
                "meta": "meta.json: unreadable"}[damage]
    assert expected in damaged[0][1]
    assert torch.equal(manager.load(step).state["value"], torch.full((1000,), 2.0))
    if damage == "truncate":
        with pytest.raises(CheckpointDamagedError, match="does not load"):
            manager.load(3)
    # Saving the step again replaces the damaged checkpoint.
    manager.save(3, {"value": torch.full((1000,), 3.0)})
    assert manager.newest_intact_step() == (3, [])


def test_checkpoints_without_checksums_are_checked_for_presence(tmp_path):
    manager = CheckpointManager(tmp_path)
    path = manager.save(1, {"value": torch.ones(3)})
    meta = json.loads((path / "meta.json").read_text())
    del meta["checksums"]
    (path / "meta.json").write_text(json.dumps(meta))
    assert manager.newest_intact_step() == (1, [])
    assert manager.load_config_yaml(1) is None
