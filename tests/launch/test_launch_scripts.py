"""Launch commands: torchrun line, the checked-in scripts, and the sbatch script executed
against stand-in ``scontrol``/``srun`` commands that record what they were asked."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1core.launch.commands import SlurmSpec, render_sbatch, torchrun_command

REPO = Path(__file__).resolve().parents[2]
TORCHRUN_SH = REPO / "launch" / "torchrun.sh"
SLURM_SBATCH = REPO / "launch" / "slurm.sbatch"


def test_torchrun_command_single_node():
    command = torchrun_command(4, ["train", "--config", "run.yaml", "run.seed=3"])
    assert command == [
        "python", "-m", "r1core.launch.node", "--", "--standalone", "--nnodes=1", "--nproc-per-node=4",
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
                 "#SBATCH --partition=gpu", "#SBATCH --time=02:00:00", "#SBATCH --signal=USR1@300",
                 "#SBATCH --output=%x-%j.out"):
        assert line in text.splitlines()
    assert "##SBATCH --account=my-account" in text  # commented placeholder
    assert "##SBATCH --exclusive" in text.splitlines()
    # The log is opened by SLURM before the script runs: never in a folder the script makes.
    assert "mkdir -p logs" not in text
    exclusive = render_sbatch(SlurmSpec(exclusive=True, stop_warning_s=0)).splitlines()
    assert "#SBATCH --exclusive" in exclusive and not any("--signal" in line for line in exclusive)


def _fake_slurm_bin(tmp_path: Path) -> Path:
    """``scontrol`` answering for three nodes, and ``srun`` recording its arguments, writing
    the nodes' status files it is told to (``FAKE_STATUSES``: ``node:time:status,...``) and
    exiting with ``FAKE_SRUN_STATUS``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        '#!/bin/bash\n'
        'if [[ "$1 $2" == "show hostnames" ]]; then echo "$3" > "$FAKE_LOG.nodelist"; '
        'printf "gpu-a17\\ngpu-a18\\ngpu-b02\\n"; exit 0; fi\n'
        'if [[ "$1 $2" == "show node" ]]; then echo "NodeName=$3 Arch=x86_64 CoresPerSocket=32"; '
        'echo "   NodeAddr=10.1.0.17 NodeHostName=$3 Version=22.05.8"; exit 0; fi\n'
        'exit 9\n'
    )
    (bin_dir / "srun").write_text(
        '#!/bin/bash\nprintf "%s\\n" "$@" > "$FAKE_LOG.srun"\n'
        'status_dir=$(printf "%s\\n" "$@" | sed -n 7p)\n'
        'IFS=, read -ra entries <<< "${FAKE_STATUSES:-}"\n'
        'for entry in "${entries[@]}"; do IFS=: read -r node stamp code <<< "$entry"; '
        'echo "$stamp $code" >> "$status_dir/node-$node"; done\n'
        'exit "${FAKE_SRUN_STATUS:-0}"\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def _slurm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "R1CORE_"))}
    env.update(PATH=f"{_fake_slurm_bin(tmp_path)}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(tmp_path / "call"),
               SLURM_JOB_NODELIST="gpu-a[17-18],gpu-b02", SLURM_JOB_ID="4242")
    env.update(extra)
    return env


def test_sbatch_template_derives_rendezvous_from_slurm_environment(tmp_path):
    # --exclusive on a 16-GPU node: SLURM_GPUS_ON_NODE counts every GPU, the run still gets
    # the 8 workers per node it was planned for.
    env = _slurm_env(tmp_path, SLURM_NNODES="3", SLURM_GPUS_ON_NODE="16", R1CORE_RDZV_PORT="29611")
    result = subprocess.run(
        ["bash", str(SLURM_SBATCH), "train", "--config", "my run.yaml", "run.seed=5"],
        env=env, cwd=tmp_path, check=False, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    log = tmp_path / "call"
    assert log.with_suffix(".nodelist").read_text().strip() == "gpu-a[17-18],gpu-b02"
    srun_args = log.with_suffix(".srun").read_text().splitlines()
    assert srun_args == [
        "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--label", "bash", "-c",
        'exec python -m r1core.launch.node --status-file "$0/node-$SLURM_NODEID" -- "$@"',
        str(tmp_path / ".r1core-status" / "4242"),
        "--nnodes=3", "--nproc-per-node=8", "--master-addr=10.1.0.17", "--master-port=29611",
        "-m", "r1core.cli", "train", "--config", "my run.yaml", "run.seed=5",
    ]
    assert "job 4242 ends with status 0" in result.stdout


@pytest.mark.parametrize(("statuses", "srun_status", "expected"), [
    ("0:100.5:0,1:100.7:0", "0", 0),
    # The first failure names the job's status, whatever the other nodes exited with after.
    ("0:100.5:2,1:101.0:143", "137", 2),
    ("0:100.9:0,1:100.2:75,2:100.4:75", "75", 75),
    # No node wrote its status (an agent killed): srun's own.
    ("", "137", 137),
])
def test_sbatch_exit_status_is_the_first_failed_workers(tmp_path, statuses, srun_status, expected):
    env = _slurm_env(tmp_path, FAKE_STATUSES=statuses, FAKE_SRUN_STATUS=srun_status)
    result = subprocess.run(["bash", str(SLURM_SBATCH), "train"], env=env, cwd=tmp_path, check=False,
                            capture_output=True, text=True)
    assert result.returncode == expected, result.stdout + result.stderr


def test_sbatch_defaults_apply_when_slurm_omits_gpu_count(tmp_path):
    script = tmp_path / "job.sbatch"
    script.write_text(render_sbatch(SlurmSpec(nodes=3, gpus_per_node=8, args=["eval", "run.name=e1"])))
    result = subprocess.run(["bash", str(script)], env=_slurm_env(tmp_path, SLURM_JOB_ID="7"), cwd=tmp_path,
                            check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    srun_args = (tmp_path / "call").with_suffix(".srun").read_text().splitlines()
    assert "--nnodes=3" in srun_args and "--nproc-per-node=8" in srun_args
    assert "--master-port=29500" in srun_args
    assert srun_args[-2:] == ["eval", "run.name=e1"]


def test_sbatch_refuses_fewer_gpus_than_workers(tmp_path):
    result = subprocess.run(["bash", str(SLURM_SBATCH), "train"], env=_slurm_env(tmp_path, SLURM_GPUS_ON_NODE="4"),
                            cwd=tmp_path, check=False, capture_output=True, text=True)
    assert result.returncode == 1 and "8 workers per node asked for, SLURM_GPUS_ON_NODE=4" in result.stderr


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


# ---------------------------------------------------------------------- the per-node launcher

WORKER = """
import os, signal, sys, time
rank = int(os.environ["RANK"])
mode = sys.argv[1]
if mode == "exit":
    time.sleep(0.5 * rank)
    sys.exit(int(sys.argv[2 + rank]))
# "stop": like an r1core worker, take the (inherited, blocked) stop signal and exit with 75.
open(sys.argv[2] + f".{rank}", "w").close()
received = signal.sigwait({signal.SIGTERM, signal.SIGUSR1})
sys.exit(75)
"""


def _node(tmp_path: Path, *worker_args: str, nproc: int = 2) -> list[str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return [sys.executable, "-m", "r1core.launch.node", "--status-file", str(tmp_path / "status" / "node-0"), "--",
            "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}", str(script), *worker_args]


def _node_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))


def test_node_launcher_exits_with_the_first_failed_workers_status(tmp_path):
    ok = subprocess.run(_node(tmp_path, "exit", "0", "0"), env=_node_env(), capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    failed = subprocess.run(_node(tmp_path, "exit", "0", "2"), env=_node_env(), capture_output=True, text=True,
                            timeout=300)
    assert failed.returncode == 2, failed.stderr[-3000:]  # torchrun alone exits with 1
    assert "rank 1 exited first, with status 2" in failed.stderr
    lines = (tmp_path / "status" / "node-0").read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["0", "2"]


@pytest.mark.parametrize(("signum", "everyone"), [(signal.SIGTERM, True), (signal.SIGUSR1, False)],
                         ids=["SIGTERM to every process", "SIGUSR1 to the agent"])
def test_node_launcher_leaves_stop_signals_to_the_workers(tmp_path, signum, everyone):
    """A stop signal as SLURM sends it (SIGTERM to every process of the step at preemption and
    the time limit; SIGUSR1 to the task's process for --signal and scancel --signal): the agent
    neither dies nor ends its workers, the workers get the signal and finish on their own
    terms, and their status is the job's."""
    marker = tmp_path / "ready"
    process = subprocess.Popen(_node(tmp_path, "stop", str(marker)), env=_node_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not all(Path(f"{marker}.{rank}").exists() for rank in range(2)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.1)
    for pid in [process.pid, *(_descendants(process.pid) if everyone else [])]:
        os.kill(pid, signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 75, err[-3000:]
    if everyone:
        # The workers took the signal themselves too, and may have exited before the agent
        # looked for them: it passes the signal on to those still there.
        assert re.search(rf"{signal.Signals(signum).name} passed on to [012] worker\(s\)", err), err[-3000:]
    else:
        assert f"{signal.Signals(signum).name} passed on to 2 worker(s)" in err, err[-3000:]


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    parents = {int(a): int(b) for a, b in (line.split() for line in out.splitlines())}
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def test_node_rank_follows_slurm(monkeypatch):
    from r1core.launch.node import status_of_exitcode, with_node_rank

    monkeypatch.setenv("SLURM_NODEID", "3")
    assert with_node_rank(["--nnodes=4", "x.py"]) == ["--node-rank=3", "--nnodes=4", "x.py"]
    assert with_node_rank(["--node-rank=1", "x.py"]) == ["--node-rank=1", "x.py"]
    assert with_node_rank(["--standalone", "x.py"]) == ["--standalone", "x.py"]
    monkeypatch.delenv("SLURM_NODEID")
    assert with_node_rank(["--nnodes=4", "x.py"]) == ["--nnodes=4", "x.py"]
    assert [status_of_exitcode(code) for code in (0, 2, 75, -15, -9)] == [0, 2, 75, 143, 137]
