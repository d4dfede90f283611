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
