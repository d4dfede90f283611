import json

from r1core.trainer.run_logger import RunLogger


def test_logs_plot_summary_and_resume_truncation(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=True)
    for step in range(5):
        logger.log(step, {"reward": step / 4, "accuracy": step / 8})
    logger.log(4, {"accuracy": 0.75}, phase="eval")
    png = logger.plot(tmp_path / "curves.png", [("reward", "train"), ("accuracy", "eval")])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logger.write_summary({"accuracy_end": 0.75})
    logger.close()
    assert json.loads((tmp_path / "summary.json").read_text()) == {"accuracy_end": 0.75}
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    assert logger.series("reward", "train") == ([0, 1, 2, 3, 4], [0.0, 0.25, 0.5, 0.75, 1.0])

    resumed = RunLogger(tmp_path, tensorboard=False, resume_from=2)
    assert [(r["phase"], r["step"]) for r in resumed.history] == [("train", 0), ("train", 1), ("train", 2)]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2]


def test_resume_keeps_other_phases(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    for step in range(4):
        logger.log(step, {"nll": 1.0}, phase="sft")
    logger.log(1, {"reward": 0.5})
    logger.log(2, {"reward": 0.6})
    resumed = RunLogger(tmp_path, tensorboard=False, resume_from=1)
    assert [(r["phase"], r["step"]) for r in resumed.history] == [("sft", 0), ("sft", 1), ("sft", 2), ("sft", 3), ("train", 1)]


def test_a_torn_last_line_is_dropped_and_a_damaged_middle_line_is_named(tmp_path):
    import pytest

    from r1core.trainer.run_logger import CorruptRunLogError

    logger = RunLogger(tmp_path, tensorboard=False)
    for step in (1, 2):
        logger.log(step, {"reward": 0.5})
    logger.close()
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "phase": "train", "rew')  # a kill in the middle of a write
    resumed = RunLogger(tmp_path, tensorboard=False, resume_from=2)
    assert [r["step"] for r in resumed.history] == [1, 2]
    resumed.log(3, {"reward": 0.7})
    resumed.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    lines[1] = "garbage"
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptRunLogError, match=r"metrics.jsonl:2: not a metrics record"):
        RunLogger(tmp_path, tensorboard=False, resume_from=3)


def test_restart_drops_every_record_of_the_earlier_attempt(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log(0, {"nll": 1.0}, phase="sft")
    logger.log(0, {"accuracy": 0.1}, phase="eval")
    logger.close("failed")
    again = RunLogger(tmp_path, tensorboard=False, restart=True)
    assert again.history == [] and (tmp_path / "metrics.jsonl").read_text() == ""
    assert [a["status"] for a in again.attempts[:-1]] == ["failed"]


def test_wall_time_adds_up_over_attempts_and_summaries_hold_no_nan(tmp_path, monkeypatch):
    import time

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    first = RunLogger(tmp_path, tensorboard=False)
    clock[0] += 30.0
    first.log(1, {"reward": 0.1})  # a killed attempt keeps the time written at its last flush
    assert json.loads((tmp_path / "attempts.json").read_text())[0]["seconds"] == 30.0
    clock[0] += 5.0  # lost: the attempt is killed before it writes again
    second = RunLogger(tmp_path, tensorboard=False, resume_from=1)
    clock[0] += 12.0
    assert second.wall_seconds() == 42.0
    second.write_summary({"accuracy_gain": float("nan"), "steps": 2})
    second.close()
    assert json.loads((tmp_path / "summary.json").read_text()) == {"accuracy_gain": None, "steps": 2}
    attempts = json.loads((tmp_path / "attempts.json").read_text())
    assert [a["seconds"] for a in attempts] == [30.0, 12.0] and attempts[1]["status"] == "finished"
    # A new run (no resume) in a fresh folder counts its own time only.
    assert RunLogger(tmp_path / "other", tensorboard=False).wall_seconds() == 0.0


def test_an_ended_attempt_stops_counting_so_the_summary_equals_attempts_json(tmp_path, monkeypatch):
    import time

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    logger = RunLogger(tmp_path, tensorboard=False)
    clock[0] += 20.0
    total = logger.end_attempt("finished")
    logger.write_summary({"wall_seconds": total})
    clock[0] += 3.0  # plotting, closing the writers: after the summary's figure
    assert logger.wall_seconds() == 20.0
    logger.close("failed")  # the attempt has ended: neither its time nor its status change
    attempts = json.loads((tmp_path / "attempts.json").read_text())
    assert attempts == [{"started_unix": attempts[0]["started_unix"], "seconds": 20.0, "status": "finished"}]
    assert json.loads((tmp_path / "summary.json").read_text())["wall_seconds"] == 20.0


def test_weights_and_biases_mirrors_the_metrics(tmp_path, monkeypatch):
    """A real W&B run in offline mode: the run's id is kept for the resumed attempt, and the
    metric names land in its transaction log."""
    import pytest

    pytest.importorskip("wandb")
    from r1core.trainer.run_logger import WandbConfig

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    section = WandbConfig(enabled=True, mode="offline", project="r1core-test", tags=["ci"])
    logger = RunLogger(tmp_path, tensorboard=False, wandb=section, run_name="tiny", run_config={"trainer": {"steps": 2}})
    logger.log(0, {"nll": 2.5}, phase="sft")
    logger.log(1, {"reward_mean": 0.25})
    logger.write_summary({"accuracy_end": 0.5})
    logger.close()
    run_id = (tmp_path / "wandb_id").read_text().strip()
    logs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(logs) == 1
    data = logs[0].read_bytes()
    for key in (b"train/reward_mean", b"sft/nll", b"train/step", b"accuracy_end", b"r1core-test"):
        assert key in data, key
    resumed = RunLogger(tmp_path, tensorboard=False, wandb=section, resume_from=1)
    resumed.close()
    assert (tmp_path / "wandb_id").read_text().strip() == run_id
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))) >= 1
