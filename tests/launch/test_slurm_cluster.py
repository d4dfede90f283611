"""The SLURM launch path on a real SLURM 22.05: two slurmd on this host as two nodes.

A tiny ``r1core train`` (data-parallel over the two nodes, one worker each, CPU) is submitted
from a folder holding nothing but the checked-in ``launch/slurm.sbatch``, as on a fresh clone:

1. stopped by ``scancel --signal=USR1`` (what ``#SBATCH --signal=USR1@300`` sends before the
   time limit, to every process of the job: agents, workers, vLLM engines, reward workers)
   once its first evaluation is logged: the workers finish their step, checkpoint, and the
   job ends with exit code 75;
2. resubmitted with ``--resume`` and one more step: it completes (exit 0) from that
   checkpoint, every RL step logged once;
3. a script written by ``r1core launch slurm`` with a batch that does not split over the two
   replicas: the job fails with the workers' own exit code 2, not torchrun's 1.

Every job's log has each line labelled with its node. Needs root (apt-get installs
``slurm-wlm`` and ``munge`` when missing) and about 10 minutes of 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launch.slurm_cluster import SlurmCluster, free_port, install

pytest.importorskip("vllm")
pytest.importorskip("megatron.core")
pytestmark = [pytest.mark.slow, pytest.mark.distributed]

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "embedded.vocab_size=64", "embedded.model.hidden_size=64", "embedded.model.num_layers=1",
    "embedded.model.num_attention_heads=2", "embedded.model.num_key_value_heads=1",
    "embedded.model.intermediate_size=128", "data.num_train=64", "data.num_eval=8", "sft.epochs=1",
    "sft.batch_size=32", "sft.micro_batch_size=16", "trainer.prompts_per_step=4", "trainer.samples_per_prompt=4",
    "trainer.max_response_tokens=16", "eval.every=1", "eval.k=2", "eval.max_tokens=16", "checkpoint.interval=0",
    "reward.num_workers=1", "rollout.max_model_len=80", "reward.weights.length_penalty=1.0",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("a SLURM cluster on this host needs Linux and root")
    reason = install()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _job_env() -> dict[str, str]:
    """What the job inherits (sbatch exports the submitting environment): the test's Python
    first on PATH, so the script's ``python`` is this installation."""
    return {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "R1CORE_RDZV_PORT": str(free_port()),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def _labelled(log: Path) -> set[str]:
    """The node labels ("0", "1") that lines of a job log carry (``srun --label``)."""
    return {line.split(":", 1)[0].strip() for line in log.read_text(errors="replace").splitlines()
            if line[:1].isdigit() and ":" in line}


def _wait_for_eval(run_dir: Path, cluster: SlurmCluster, job_id: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.is_file() and '"phase": "eval"' in metrics.read_text():
            return
        assert cluster.job(job_id)["JobState"] in ("PENDING", "RUNNING", "CONFIGURING"), cluster.job(job_id)
        time.sleep(1.0)
    raise TimeoutError("no evaluation logged")


def test_slurm_stop_resume_and_exit_codes(cluster, tmp_path):
    submit = tmp_path / "fresh-clone"  # nothing in it but the script: no logs/ folder
    submit.mkdir()
    script = submit / "slurm.sbatch"
    shutil.copy(REPO / "launch" / "slurm.sbatch", script)
    runs = tmp_path / "runs"
    run_args = ["train", f"run.output_root={runs}", "run.name=slurm", *TINY]
    # The checked-in template asks for 8 GPUs per node; this cluster has 2: ask for 1 on
    # the command line (which overrides #SBATCH lines) and start 1 worker per node.
    resources = ["--nodes=2", "--gpus-per-node=1", "--time=00:30:00"]
    env = {**_job_env(), "R1CORE_NPROC_PER_NODE": "1"}

    # 1. Stopped by SIGUSR1 to every process of the job once the first evaluation is logged.
    first = cluster.sbatch(*resources, str(script), *run_args, "trainer.steps=40", cwd=submit, env=env)
    _wait_for_eval(runs / "slurm", cluster, first)
    cluster.signal(first, "USR1")
    fields = cluster.wait(first, timeout=600)
    log = submit / f"r1core-{first}.out"
    assert fields["ExitCode"] == "75:0", (fields, log.read_text()[-6000:])
    assert fields["NodeList"] == "node[1-2]"
    assert _labelled(log) == {"0", "1"}, log.read_text()[-3000:]
    assert "stopped by SIGUSR1: checkpoint" in log.read_text()  # the workers saved, then exited 75
    saved = sorted(int(p.name.removeprefix("step_")) for p in (runs / "slurm" / "checkpoints").glob("step_*"))
    assert len(saved) == 1 and saved[0] < 40, saved

    # 2. The same submission with --resume (one more step than the checkpoint's) completes
    # from that checkpoint.
    steps = saved[0] + 1
    second = cluster.sbatch(*resources, str(script), *run_args, f"trainer.steps={steps}", "--resume", cwd=submit,
                            env=env)
    fields = cluster.wait(second, timeout=900)
    log = submit / f"r1core-{second}.out"
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), (fields, log.read_text()[-6000:])
    assert f"resumed from step {saved[0]}" in log.read_text()
    summary = json.loads((runs / "slurm" / "summary.json").read_text())
    assert summary["steps"] == steps and summary["attempts"] == 2
    assert any((runs / "slurm" / "final").glob("*.safetensors"))
    train_steps = [json.loads(line)["step"] for line in (runs / "slurm" / "metrics.jsonl").read_text().splitlines()
                   if json.loads(line)["phase"] == "train"]
    assert train_steps == list(range(1, steps + 1))

    # 3. A generated script, a batch that does not split over 2 replicas: the job's exit code
    # is the workers' 2.
    generated = submit / "bad.sbatch"
    status = subprocess.run(
        [sys.executable, "-m", "r1core.cli", "launch", "slurm", "--nodes", "2", "--gpus-per-node", "1",
         "--time", "00:10:00", "--output", str(generated), "--", "train", f"run.output_root={runs}", "run.name=bad",
         *TINY, "trainer.prompts_per_step=3"], capture_output=True, text=True, cwd=submit)
    assert status.returncode == 0, status.stderr
    third = cluster.sbatch(str(generated), cwd=submit, env=_job_env())
    fields = cluster.wait(third, timeout=600)
    log = submit / f"r1core-{third}.out"
    assert (fields["JobState"], fields["ExitCode"]) == ("FAILED", "2:0"), (fields, log.read_text()[-6000:])
    text = log.read_text()
    assert "configuration error: trainer.prompts_per_step=3 is not divisible" in text or \
        "trainer.prompts_per_step" in text, text[-3000:]
    assert "Traceback" not in text
