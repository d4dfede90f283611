"""The per-replica rollouts log (``logging.rollouts``) after an interrupted run."""

from __future__ import annotations

import json

from batches import rollout_batch

from r1core.batch import RolloutBatch
from r1core.commands.train import trim_rollouts, write_rollouts


def _batch(reward: float) -> RolloutBatch:
    return rollout_batch([[reward, reward]], lengths=[[1, 2]])


def test_resume_drops_the_samples_of_steps_after_the_checkpoint(tmp_path):
    path = tmp_path / "rollouts" / "rank_00000.jsonl"
    for step in (1, 2, 3):  # steps 1-3 ran; the newest checkpoint is step 2
        write_rollouts(path, step, _batch(float(step)))
    trim_rollouts(path, 2)
    write_rollouts(path, 3, _batch(30.0))  # step 3 again, after the resume
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 1, 2, 2, 3, 3]
    assert [r["reward"] for r in records if r["step"] == 3] == [30.0, 30.0]


def test_trim_without_a_file_does_nothing(tmp_path):
    trim_rollouts(tmp_path / "absent.jsonl", 5)
    assert not (tmp_path / "absent.jsonl").exists()
