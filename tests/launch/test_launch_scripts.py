"""Launch commands: torchrun line, the checked-in scripts, and the sbatch script executed
against stand-in ``scontrol``/``srun`` commands that record what they were asked."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from r1core.launch.commands import SlurmSpec, render_sbatch, torchrun_command

REPO = Path(__file__).resolve().parents[2]
TORCHRUN_SH = REPO / "launch" / "torchrun.sh"
SLURM_SBATCH = REPO / "launch" / "slurm.sbatch"


def test_torchrun_command_single_node():
    command = torchrun_command(4, ["train", "--config", "run.yaml", "run.seed=3"])
    assert command == [
        "torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=4",
        "-m", "r1core.cli", "train", "--config", "run.yaml", "run.seed=3",
    ]
    with pytest.raises(ValueError, match="nproc_per_node must be positive"):
        torchrun_command(0, ["train"])


def test_torchrun_script_prints_the_same_command():
    assert subprocess.run(["bash", "-n", str(TORCHRUN_SH)], check=False).returncode == 0
    env = dict(os.environ, R1CORE_DRY_RUN="1", NPROC_PER_NODE="4")
    args = ["train", "--config", "my run.yaml", "parallel.tensor=2"]
    output = subprocess.run(
        ["bash", str(TORCHRUN_SH), *args], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert shlex.split(output) == torchrun_command(4, args)


def test_torchrun_script_without_arguments_prints_usage():
    result = subprocess.run(["bash", str(TORCHRUN_SH)], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "Usage" in result.stderr


def test_checked_in_sbatch_template_is_the_rendered_default():
    assert SLURM_SBATCH.read_text() == render_sbatch(SlurmSpec()), (
        "launch/slurm.sbatch is stale: regenerate it with "
        "`r1core launch slurm --output launch/slurm.sbatch`"
    )


@pytest.mark.parametrize(
    "spec",
    [
        SlurmSpec(),
        SlurmSpec(nodes=8, gpus_per_node=8, partition="gpu", account="rl", cpus_per_task=96,
                  args=["train", "--config", "a b.yaml", "x='q'"], env={"NCCL_DEBUG": "INFO"}),
    ],
)
def test_sbatch_scripts_pass_bash_syntax_check(tmp_path, spec):
    script = tmp_path / "job.sbatch"
    script.write_text(render_sbatch(spec))
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_sbatch_header_lines():
    text = render_sbatch(SlurmSpec(nodes=8, gpus_per_node=4, partition="gpu", time="02:00:00"))
    for line in ("#SBATCH --nodes=8", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=02:00:00"):
        assert line in text.splitlines()
    assert "##SBATCH --account=my-account" in text  # commented placeholder


def _fake_slurm_bin(tmp_path: Path) -> Path:
    """``scontrol`` expanding a node list and ``srun`` recording its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        '#!/bin/bash\n[[ "$1 $2" == "show hostnames" ]] || exit 9\n'
        'echo "$3" > "$FAKE_LOG.nodelist"\nprintf "gpu-a17\\ngpu-a18\\ngpu-b02\\n"\n'
    )
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$FAKE_LOG.srun"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def test_sbatch_template_derives_rendezvous_from_slurm_environment(tmp_path):
    bin_dir = _fake_slurm_bin(tmp_path)
    log = tmp_path / "call"
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        FAKE_LOG=str(log),
        SLURM_JOB_NODELIST="gpu-a[17-18],gpu-b02",
        SLURM_NNODES="3",
        SLURM_GPUS_ON_NODE="4",
        SLURM_JOB_ID="4242",
        R1CORE_RDZV_PORT="29611",
    )
    result = subprocess.run(
        ["bash", str(SLURM_SBATCH), "train", "--config", "my run.yaml", "run.seed=5"],
        env=env, cwd=tmp_path, check=False, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.with_suffix(".nodelist").read_text().strip() == "gpu-a[17-18],gpu-b02"
    srun_args = log.with_suffix(".srun").read_text().splitlines()
    assert srun_args == [
        "--ntasks-per-node=1", "--kill-on-bad-exit=1", "torchrun",
        "--nnodes=3", "--nproc-per-node=4", "--rdzv-id=4242", "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu-a17:29611", "-m", "r1core.cli",
        "train", "--config", "my run.yaml", "run.seed=5",
    ]


def test_sbatch_defaults_apply_when_slurm_omits_gpu_count(tmp_path):
    bin_dir = _fake_slurm_bin(tmp_path)
    log = tmp_path / "call"
    script = tmp_path / "job.sbatch"
    script.write_text(render_sbatch(SlurmSpec(nodes=3, gpus_per_node=8, args=["eval", "run.name=e1"])))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log),
               SLURM_JOB_NODELIST="gpu-a[17-18],gpu-b02", SLURM_JOB_ID="7")
    result = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    srun_args = log.with_suffix(".srun").read_text().splitlines()
    assert "--nnodes=3" in srun_args and "--nproc-per-node=8" in srun_args
    assert "--rdzv-endpoint=gpu-a17:29500" in srun_args
    assert srun_args[-2:] == ["eval", "run.name=e1"]


def test_sbatch_fails_clearly_without_a_node_list(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/bash\nexit 0\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_NODELIST="", SLURM_JOB_ID="1")
    result = subprocess.run(["bash", str(SLURM_SBATCH), "train"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "no host names" in result.stderr
