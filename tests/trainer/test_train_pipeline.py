"""``r1core train`` end to end on a tiny configuration: artefacts, the console, bit-exact
resume after SIGTERM, past a damaged checkpoint and a torn log line, refused resumes, SIGINT,
and the child processes ending with the run.

Each run is a real subprocess of the ``r1core`` command (tokenizer, model, cold-start SFT,
vLLM rollouts, rewards in the worker pool, GRPO, evaluation, checkpoints), so the command
line, the configuration, the signals and the artefacts are what a user gets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytest.importorskip("megatron.core")
pytest.importorskip("math_verify")

pytestmark = pytest.mark.slow

TINY = [
    "embedded.vocab_size=64",
    "embedded.model.hidden_size=64",
    "embedded.model.num_layers=1",
    "embedded.model.num_attention_heads=2",
    "embedded.model.num_key_value_heads=1",
    "embedded.model.intermediate_size=128",
    "data.num_train=64",
    "data.num_eval=8",
    "sft.epochs=1",
    "sft.batch_size=32",
    "sft.micro_batch_size=32",
    "trainer.prompts_per_step=4",
    "trainer.samples_per_prompt=4",
    "trainer.max_response_tokens=24",
    "eval.every=1",
    "eval.k=2",
    "eval.max_tokens=24",
    "checkpoint.interval=1",
    "reward.num_workers=1",
    "rollout.max_model_len=96",
    # A barely trained model solves nothing; a length term makes rewards differ within a
    # group, so the RL steps really change the weights (else the resume check is vacuous).
    "reward.weights.length_penalty=1.0",
    "reward.weights.r1_format=0.5",
]


def _env() -> dict[str, str]:
    # VLLM_DIST_IDENT: vLLM's CPU worker sets it in the process of an in-process engine, so a
    # run started from such a process inherits it (as these runs do after the suite's
    # in-process engine tests). Set here so that the quiet-console check always covers it.
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", VLLM_DIST_IDENT="r1core-test")


def _command(root: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "r1core.cli", "train", f"run.output_root={root}", f"run.name={name}", *TINY, *extra]


def train(root: Path, name: str, *extra: str, status: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(_command(root, name, *extra), capture_output=True, text=True, env=_env(), timeout=900)
    assert result.returncode == status, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def start(root: Path, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_command(root, name, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())


def wait_for(predicate, process: subprocess.Popen, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()[1][-6000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def logged(run_dir: Path, phase: str, step: int):
    """A predicate: ``metrics.jsonl`` holds a complete record of ``phase`` at ``step``."""
    def check() -> bool:
        path = run_dir / "metrics.jsonl"
        if not path.is_file():
            return False
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record["phase"] == phase and record["step"] == step:
                return True
        return False
    return check


def console_lines(stderr: str) -> list[str]:
    """What a terminal shows: the progress bar redraws its line with carriage returns."""
    return [line for chunk in stderr.split("\n") for line in [chunk.split("\r")[-1]] if line.strip()]


def weights(run_dir: Path, stage: str = "final") -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted((run_dir / stage).glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def children_of(pid: int) -> list[int]:
    """Processes started (directly or not) by ``pid``, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_train_artefacts_quiet_console_sigterm_and_resumes_are_bit_exact(tmp_path):
    """One uninterrupted run against one interrupted by SIGTERM and resumed twice, the
    second time past a damaged newest checkpoint and a torn log line: identical weights."""
    import torch
    import transformers

    straight = train(tmp_path, "straight", "trainer.steps=3", "checkpoint.interval=0")
    run_dir = tmp_path / "straight"
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("accuracy_start", "accuracy_end", "steps", "wall_seconds", "tokens_per_second"):
        assert key in summary, key
    assert summary["steps"] == 3 and summary["tokens_per_second"] > 0 and summary["attempts"] == 1
    assert 0.0 <= summary["accuracy_start"] <= 1.0 and 0.0 <= summary["accuracy_end"] <= 1.0
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir())
    assert (run_dir / "config.yaml").is_file()
    # checkpoint.interval=0: only at the end.
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == ["step_000003"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"sft", "train", "eval"} <= {r["phase"] for r in records}
    # Rollouts are sampled in the policy's dtype (float32 here): the engine's log-probs of the
    # sampled tokens equal the trainer's up to kernel rounding.
    for record in (r for r in records if r["phase"] == "train"):
        assert record["logprob_mismatch_max"] < 1e-3, record["logprob_mismatch_max"]
    model = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()

    # The default console: r1core's lines and one bar in steps that ends at 100%; no
    # library warning, no traceback.
    lines = console_lines(straight.stderr)
    noisy = [line for line in lines if any(word in line for word in ("WARNING", "Warning", "warn(", "Traceback", "vLLM"))]
    assert not noisy, noisy
    bars = [line for line in lines if line.startswith("r1core:")]
    assert bars and "100%" in bars[-1] and "step" in bars[-1], bars[-3:]
    assert sum(line.startswith("eval at step") for line in lines) == 4  # before step 1 and after each step

    # Interrupted: SIGTERM once the first evaluation is logged; the run stops at the next
    # step boundary (right after that evaluation, or after step 1), saves a checkpoint there
    # although checkpoint.interval=0, and exits with 75.
    process = start(tmp_path, "interrupted", "trainer.steps=3", "checkpoint.interval=0")
    interrupted = tmp_path / "interrupted"
    wait_for(logged(interrupted, "eval", 0), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 75, err[-4000:]
    assert "stopped by SIGTERM: checkpoint" in err and "continue with --resume" in err
    saved = sorted(p.name for p in (interrupted / "checkpoints").glob("step_*"))
    assert len(saved) == 1 and saved[0] in ("step_000000", "step_000001"), saved

    # Resumed to step 2 (a checkpoint at every step now), then the newest checkpoint is
    # damaged and the log's last line torn, as a kill in the middle of a copy and of a write
    # would leave them: the next resume reports the damage and starts from the older step.
    train(tmp_path, "interrupted", "trainer.steps=2", "checkpoint.interval=1", "--resume")
    newest = interrupted / "checkpoints" / "step_000002" / "rank_00000.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with open(interrupted / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "phase": "tra')
    resumed = train(tmp_path, "interrupted", "trainer.steps=3", "checkpoint.interval=1", "--resume")
    assert "checkpoint step 2 is damaged and is passed over" in resumed.stderr
    assert "resumed from step 1" in resumed.stderr

    straight_weights, resumed_weights = weights(run_dir), weights(interrupted)
    cold_start = weights(run_dir, "sft")
    assert any(not torch.equal(straight_weights[n], cold_start[n]) for n in straight_weights), "RL did not change the model"
    assert straight_weights.keys() == resumed_weights.keys()
    for name in straight_weights:
        assert torch.equal(straight_weights[name], resumed_weights[name]), name
    log = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["phase"] == "train"] == [1, 2, 3]
    assert [r["step"] for r in log if r["phase"] == "eval"] == [0, 1, 2, 3]
    # Wall time adds up: three attempts, each counted.
    attempts = json.loads((interrupted / "attempts.json").read_text())
    assert [a["status"] for a in attempts] == ["stopped", "finished", "finished"]
    total = json.loads((interrupted / "summary.json").read_text())["wall_seconds"]
    assert total == pytest.approx(sum(a["seconds"] for a in attempts), abs=1e-6) and total > attempts[-1]["seconds"]

    # A resume whose model differs from the checkpoint's is refused by name, before any work.
    refused = train(tmp_path, "straight", "--resume", "embedded.model.intermediate_size=256", status=2)
    assert refused.stderr.strip().splitlines()[-1].startswith("r1core train: error: checkpoint.resume: the configuration")
    assert "embedded.model.intermediate_size (128 -> 256)" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_sigint_stops_cleanly_and_children_end_with_the_run(tmp_path):
    """Ctrl-C while the engine and the reward workers run: one line, status 130, no
    traceback from inside vLLM, no process left behind."""
    process = start(tmp_path, "sigint", "trainer.steps=50")
    run_dir = tmp_path / "sigint"
    wait_for(logged(run_dir, "train", 1), process)
    children = children_of(process.pid)
    assert children, "the reward workers run in processes of their own"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-4000:]
    assert "Traceback" not in err
    assert console_lines(err)[-1] == "r1core train: interrupted by SIGINT; the newest checkpoint (if any) is kept"
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)]


def test_a_killed_trainer_takes_its_engine_process_with_it(tmp_path):
    """SIGKILL leaves no clean-up to the trainer: the engine core (here in a process of its
    own) and the reward workers must die because their parent did."""
    process = start(tmp_path, "killed", "trainer.steps=50", "rollout.engine_mode=own_process")
    wait_for(logged(tmp_path / "killed", "eval", 0), process)
    children = children_of(process.pid)
    engines = [pid for pid in children if "EngineCore" in (Path("/proc") / str(pid) / "cmdline").read_text(errors="replace")
               or "multiprocessing-fork" in (Path("/proc") / str(pid) / "cmdline").read_text(errors="replace")]
    assert engines, [(Path("/proc") / str(pid) / "cmdline").read_text(errors="replace") for pid in children]
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)]


def test_resume_without_a_checkpoint_is_refused_and_resume_or_start_starts_over(tmp_path):
    from r1core.commands.train import RunStart, open_run_folder
    from r1core.config import ConfigError, RunConfig, load_config
    from r1core.parallel.topology import Topology

    def config(*extra: str) -> RunConfig:
        return load_config(RunConfig, overrides=[f"run.output_root={tmp_path}", *extra])

    result = train(tmp_path, "fresh", "--resume", status=2)
    assert "checkpoint.resume: no checkpoint in" in result.stderr and "--resume-or-start" in result.stderr
    assert "Traceback" not in result.stderr
    # An earlier attempt that saved nothing (killed in the cold start): a plain run is refused,
    # --resume-or-start starts over and drops that attempt's records.
    run_dir = tmp_path / "r1core"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 0, "phase": "sft", "loss": 3.0}\n')
    with pytest.raises(FileExistsError, match="--resume-or-start if it saved no checkpoint yet"):
        open_run_folder(config(), Topology())
    with pytest.raises(ConfigError, match="no checkpoint in"):
        open_run_folder(config("checkpoint.resume=true"), Topology())
    assert open_run_folder(config("checkpoint.resume=true", "checkpoint.start_if_none=true"), Topology()) == \
        RunStart(resume_step=None, restart=True)
    # Only damaged checkpoints: refused, with the reason.
    from r1core.trainer.checkpoint import CheckpointManager

    manager = CheckpointManager(run_dir / "checkpoints")
    manager.save(2, {"x": torch_zeros()})
    (run_dir / "checkpoints" / "step_000002" / "rank_00000.pt").unlink()
    with pytest.raises(ConfigError, match=r"no intact checkpoint .*\(every one is damaged"):
        open_run_folder(config("checkpoint.resume=true", "checkpoint.start_if_none=true"), Topology())
    manager.save(2, {"x": torch_zeros()}, config_yaml=dump_config(config()))
    with pytest.raises(ConfigError, match="trainer.steps=1 is below the checkpoint's step 2"):
        open_run_folder(config("checkpoint.resume=true", "trainer.steps=1"), Topology())
    assert open_run_folder(config("checkpoint.resume=true", "trainer.steps=9"), Topology()) == RunStart(resume_step=2)


def torch_zeros():
    import torch

    return torch.zeros(3)


def dump_config(config) -> str:
    from r1core.config import dump_config as dump

    return dump(config)


def test_unknown_key_fails_before_any_work(tmp_path):
    command = [sys.executable, "-m", "r1core.cli", "train", f"run.output_root={tmp_path}", "trainer.stepz=3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "trainer.stepz" in result.stderr
    assert not any(tmp_path.iterdir())
