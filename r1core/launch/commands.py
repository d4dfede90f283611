"""Commands that start a run: torchrun on one node, and an sbatch script for SLURM.

Both start ``python -m r1core.cli <subcommand> ...`` once per GPU through torchrun's agent,
run by :mod:`r1core.launch.node` so that the run's exit status and its stop signals survive
the agent. On SLURM one task per node runs that agent (``srun --ntasks-per-node=1``); the
agents meet at a static rendezvous on the allocation's first node (its ``NodeAddr`` from
``scontrol``), each with node rank ``SLURM_NODEID``, and start the per-GPU workers with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. Consecutive global ranks share a node, in the
allocation's node order, which is what the process-group plan assumes.

``launch/slurm.sbatch`` in the repository is :func:`render_sbatch` of the default
:class:`SlurmSpec` with the run's arguments left to the command line (``"$@"``); a test
keeps the two identical.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

ENTRY_MODULE = "r1core.cli"
NODE_MODULE = "r1core.launch.node"
DEFAULT_RDZV_PORT = 29500


def torchrun_command(nproc_per_node: int, args: Sequence[str]) -> list[str]:
    """Single-node command line: torchrun's agent through :mod:`r1core.launch.node` (the
    workers' exit status kept, stop signals left to them); ``--standalone`` picks a free
    rendezvous port.

    Args:
        nproc_per_node: worker processes to start, normally one per GPU.
        args: the ``r1core`` subcommand and its arguments, e.g. ``["train", "--config", "x.yaml"]``.
    """
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be positive, got {nproc_per_node}")
    return [
        "python",
        "-m",
        NODE_MODULE,
        "--",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={nproc_per_node}",
        "-m",
        ENTRY_MODULE,
        *args,
    ]


@dataclass
class SlurmSpec:
    """What an sbatch script asks of SLURM and what it runs."""

    nodes: int = 2
    gpus_per_node: int = 8
    """GPUs asked for on each node, and the workers started there (one per GPU)."""
    job_name: str = "r1core"
    time: str = "24:00:00"
    cpus_per_task: int = 0
    """CPUs for each node's task (0: leave the #SBATCH line out, the cluster default)."""
    partition: Optional[str] = None
    account: Optional[str] = None
    output: str = "%x-%j.out"
    """The job's log (relative to the submission folder, which exists: SLURM opens it before
    the script runs, so it cannot be in a folder the script would create)."""
    exclusive: bool = False
    """Ask for whole nodes; the script still starts ``gpus_per_node`` workers per node."""
    stop_warning_s: int = 300
    """SLURM sends SIGUSR1 this long before the time limit, so the run checkpoints and exits
    with 75 before SIGTERM and SIGKILL end it (0: leave the #SBATCH line out)."""
    rdzv_port: int = DEFAULT_RDZV_PORT
    args: Optional[list[str]] = None
    """The r1core subcommand and its arguments; None forwards the script's own ``"$@"``."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra ``export NAME=value`` lines."""


def _sbatch_lines(spec: SlurmSpec) -> list[str]:
    lines = [
        f"#SBATCH --job-name={spec.job_name}",
        f"#SBATCH --nodes={spec.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={spec.gpus_per_node}",
    ]
    if spec.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={spec.cpus_per_task}")
    lines += [f"#SBATCH --time={spec.time}", f"#SBATCH --output={spec.output}"]
    if spec.stop_warning_s:
        lines.append(f"#SBATCH --signal=USR1@{spec.stop_warning_s}")
    lines.append("#SBATCH --exclusive" if spec.exclusive else "##SBATCH --exclusive")
    lines.append(f"#SBATCH --partition={spec.partition}" if spec.partition else "##SBATCH --partition=gpu")
    lines.append(f"#SBATCH --account={spec.account}" if spec.account else "##SBATCH --account=my-account")
    return lines


def render_sbatch(spec: SlurmSpec) -> str:
    """The sbatch script for ``spec``: #SBATCH lines, the rendezvous address, one agent per
    node through srun, and the job's exit status taken from the first failed worker."""
    if spec.nodes < 1 or spec.gpus_per_node < 1:
        raise ValueError(f"nodes and gpus_per_node must be positive, got {spec.nodes}, {spec.gpus_per_node}")
    run_args = '"$@"' if spec.args is None else shlex.join(spec.args)
    usage = (
        "sbatch launch/slurm.sbatch train --config my_run.yaml [dotted.key=value ...]"
        if spec.args is None
        else "sbatch <this file>"
    )
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(spec.env.items()))
    header = "\n".join(_sbatch_lines(spec))
    return f"""#!/bin/bash
# r1core on SLURM: one torchrun agent per node, {spec.gpus_per_node} workers each, node ranks in
# SLURM's node order. Written by `r1core launch slurm`; regenerate rather than edit by hand.
# Usage: {usage}
# Output: the job log above, every line prefixed with its node ("0: ", "1: ", ...).
# Exit status: the first failed worker's (2 bad input, 75 stopped after a checkpoint, ...).
{header}

set -euo pipefail

# Software environment: activate what the cluster needs before python is looked up.
# module load cuda/12.4
# source /path/to/venv/bin/activate

# The first node of the allocation hosts the rendezvous; its address is the one SLURM itself
# reaches it at (NodeAddr), which also works where node names do not resolve.
# (sed reads the whole list: `head -n 1` could exit first and, under pipefail, fail the
# job when scontrol is killed by SIGPIPE.)
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)
if [[ -z "$head_node" ]]; then
    echo "r1core: no host names from SLURM_JOB_NODELIST='${{SLURM_JOB_NODELIST:-}}'" >&2
    exit 1
fi
head_addr=$(scontrol show node "$head_node" 2>/dev/null | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p')
head_addr=${{head_addr:-$head_node}}
rdzv_port=${{R1CORE_RDZV_PORT:-{spec.rdzv_port}}}
nnodes=${{SLURM_NNODES:-{spec.nodes}}}
# Workers per node: what this script asked for, not SLURM_GPUS_ON_NODE (with --exclusive
# that counts every GPU of the node, and the world size would not be the one planned).
nproc_per_node=${{R1CORE_NPROC_PER_NODE:-{spec.gpus_per_node}}}
if [[ -n "${{SLURM_GPUS_ON_NODE:-}}" && "${{SLURM_GPUS_ON_NODE}}" -lt "$nproc_per_node" ]]; then
    echo "r1core: $nproc_per_node workers per node asked for, SLURM_GPUS_ON_NODE=$SLURM_GPUS_ON_NODE" >&2
    exit 1
fi
# Each node's agent records its workers' exit status here (storage every node sees, like the
# run folder); the job ends with the status of the first failure.
status_dir=${{R1CORE_STATUS_DIR:-$PWD/.r1core-status}}/$SLURM_JOB_ID
mkdir -p "$status_dir"

# Megatron-Core orders TP/SP communication kernels on one CUDA queue.
export CUDA_DEVICE_MAX_CONNECTIONS=1
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-8}}
# NCCL knobs: uncomment what the cluster's network needs.
# export NCCL_DEBUG=WARN                 # INFO to see the chosen transports
# export NCCL_SOCKET_IFNAME=ib0          # interface for bootstrap/socket traffic
# export NCCL_IB_HCA=mlx5                # InfiniBand adapters to use
# export NCCL_IB_GID_INDEX=3             # RoCE clusters
# export NCCL_NVLS_ENABLE=0              # if NVLink SHARP misbehaves
# export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
{exports}
echo "r1core: $nnodes nodes x $nproc_per_node workers, rendezvous $head_addr:$rdzv_port (job $SLURM_JOB_ID)"

# SIGTERM (preemption, time limit) and SIGUSR1 reach this shell too: it keeps waiting, so
# the job's status is the run's; the workers take the signal themselves and checkpoint.
trap 'echo "r1core: stop signal received; waiting for the workers to checkpoint" >&2' TERM USR1
set +e
srun --ntasks-per-node=1 --kill-on-bad-exit=1 --label \\
    bash -c 'exec python -m {NODE_MODULE} --status-file "$0/node-$SLURM_NODEID" -- "$@"' "$status_dir" \\
    --nnodes="$nnodes" \\
    --nproc-per-node="$nproc_per_node" \\
    --master-addr="$head_addr" \\
    --master-port="$rdzv_port" \\
    -m {ENTRY_MODULE} {run_args} &
srun_pid=$!
wait "$srun_pid"
srun_status=$?
while kill -0 "$srun_pid" 2>/dev/null; do
    wait "$srun_pid"
    srun_status=$?
done
set -e
# Lines "<unix time> <status>": the earliest non-zero status, else srun's own.
status=$( (cat "$status_dir"/node-* 2>/dev/null || true) | sort -n | awk '$2 != 0 {{print $2; exit}}')
status=${{status:-$srun_status}}
echo "r1core: job $SLURM_JOB_ID ends with status $status"
exit "$status"
"""
