"""Commands that start a run: torchrun on one node, and an sbatch script for SLURM.

Both start ``python -m r1core.cli <subcommand> ...`` once per GPU through torchrun. On SLURM
one task per node runs torchrun (``srun --ntasks-per-node=1``); the torchrun agents meet
through the c10d rendezvous store on the allocation's first host, named by
``scontrol show hostnames "$SLURM_JOB_NODELIST"``, and torchrun then starts the per-GPU
workers with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. Consecutive global ranks share
a node, which is what the process-group plan assumes.

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
DEFAULT_RDZV_PORT = 29500


def torchrun_command(nproc_per_node: int, args: Sequence[str]) -> list[str]:
    """Single-node torchrun command line (``--standalone`` picks a free rendezvous port).

    Args:
        nproc_per_node: worker processes to start, normally one per GPU.
        args: the ``r1core`` subcommand and its arguments, e.g. ``["train", "--config", "x.yaml"]``.
    """
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be positive, got {nproc_per_node}")
    return [
        "torchrun",
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
    job_name: str = "r1core"
    time: str = "24:00:00"
    cpus_per_task: int = 0
    """CPUs for each node's task (0: leave the #SBATCH line out, the cluster default)."""
    partition: Optional[str] = None
    account: Optional[str] = None
    output: str = "logs/%x-%j.out"
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
    lines += [f"#SBATCH --time={spec.time}", f"#SBATCH --output={spec.output}", "#SBATCH --exclusive"]
    lines.append(f"#SBATCH --partition={spec.partition}" if spec.partition else "##SBATCH --partition=gpu")
    lines.append(f"#SBATCH --account={spec.account}" if spec.account else "##SBATCH --account=my-account")
    return lines


def render_sbatch(spec: SlurmSpec) -> str:
    """The sbatch script for ``spec``: #SBATCH lines, rendezvous derivation, srun + torchrun."""
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
# r1core on SLURM: one torchrun per node, {spec.gpus_per_node} workers each, c10d rendezvous.
# Written by `r1core launch slurm`; regenerate rather than edit by hand.
# Usage: {usage}
{header}

set -euo pipefail
mkdir -p logs

# Software environment: activate what the cluster needs before torchrun is looked up.
# module load cuda/12.4
# source /path/to/venv/bin/activate

# Rendezvous: torchrun's c10d store runs on the first host of the allocation. Every
# node's agent connects to it; the job id keeps concurrent jobs apart.
# (sed reads the whole list: `head -n 1` could exit first and, under pipefail, fail the
# job when scontrol is killed by SIGPIPE.)
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)
if [[ -z "$head_node" ]]; then
    echo "r1core: no host names from SLURM_JOB_NODELIST='${{SLURM_JOB_NODELIST:-}}'" >&2
    exit 1
fi
# Where host names do not resolve between nodes, use the head node's address instead:
# head_node=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{{print $1}}')
rdzv_port=${{R1CORE_RDZV_PORT:-{spec.rdzv_port}}}
nnodes=${{SLURM_NNODES:-{spec.nodes}}}
gpus_per_node=${{SLURM_GPUS_ON_NODE:-{spec.gpus_per_node}}}

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
echo "r1core: $nnodes nodes x $gpus_per_node GPUs, rendezvous $head_node:$rdzv_port (job $SLURM_JOB_ID)"

srun --ntasks-per-node=1 --kill-on-bad-exit=1 \\
    torchrun \\
    --nnodes="$nnodes" \\
    --nproc-per-node="$gpus_per_node" \\
    --rdzv-id="$SLURM_JOB_ID" \\
    --rdzv-backend=c10d \\
    --rdzv-endpoint="$head_node:$rdzv_port" \\
    -m {ENTRY_MODULE} {run_args}
"""
