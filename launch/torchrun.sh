#!/usr/bin/env bash
# Start an r1core run on this machine: one worker process per GPU through torchrun.
#
# Usage: launch/torchrun.sh SUBCOMMAND [ARGS...]
#   launch/torchrun.sh train --config my_run.yaml parallel.tensor=2 run.name=try1
#   NPROC_PER_NODE=4 launch/torchrun.sh sft --config cold_start.yaml
#
# NPROC_PER_NODE  workers to start (default: the GPUs nvidia-smi lists, or 1 without GPUs).
# R1CORE_DRY_RUN  set to 1 to print the command instead of running it.
# The command is the one `r1core launch torchrun --nproc-per-node N -- ARGS...` prints: torchrun's
# agent through r1core.launch.node, so the exit status is the workers' (2 bad input, 75 stopped
# after a checkpoint, ...) and SIGTERM/SIGUSR1 reach the workers, which checkpoint, not the agent.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi

if [[ -z "${NPROC_PER_NODE:-}" ]]; then
    NPROC_PER_NODE=$( (nvidia-smi --list-gpus 2>/dev/null || true) | grep -c '^GPU' || true)
    if [[ "${NPROC_PER_NODE}" -lt 1 ]]; then
        NPROC_PER_NODE=1
    fi
fi

# Megatron-Core orders TP/SP communication kernels on one CUDA queue.
export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"

# --standalone runs the rendezvous store in-process on a free local port.
command=(python -m r1core.launch.node -- --standalone --nnodes=1 "--nproc-per-node=${NPROC_PER_NODE}"
         -m r1core.cli "$@")

if [[ "${R1CORE_DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "${command[@]}"
    printf '\n'
    exit 0
fi
exec "${command[@]}"
