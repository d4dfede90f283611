"""The multi-process harness of the op tests reports what a failing worker said itself."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from r1core.testing.distributed import WorkerFailure, run_workers


def _all_reduce_ranks(rank: int, world_size: int) -> None:
    total = torch.tensor([float(rank)])
    dist.all_reduce(total)
    assert total.item() == sum(range(world_size))


def _rank_one_raises(rank: int, world_size: int) -> None:
    if rank == 1:
        raise RuntimeError("a message only rank 1 knows")


def _rank_one_aborts(rank: int, world_size: int) -> None:
    if rank == 1:
        os.write(2, b"native code says goodbye\n")
        os.abort()


@pytest.mark.distributed
def test_workers_share_a_process_group():
    run_workers(_all_reduce_ranks, 2, timeout=120)


@pytest.mark.distributed
def test_a_raising_worker_reports_its_traceback():
    with pytest.raises(WorkerFailure) as failure:
        run_workers(_rank_one_raises, 2, timeout=120)
    message = str(failure.value)
    # Rank 0 may fail too, because rank 1 left (its collectives or even the rendezvous break):
    # the report names rank 1 first, with its own traceback.
    first_report = message.split("--- rank ")[1]
    assert first_report.startswith("1: exit status 1 (the first to fail)"), message
    assert "a message only rank 1 knows" in first_report and "_rank_one_raises" in first_report


@pytest.mark.distributed
def test_a_crashing_worker_reports_signal_native_output_and_stack():
    with pytest.raises(WorkerFailure) as failure:
        run_workers(_rank_one_aborts, 2, timeout=120)
    message = str(failure.value)
    assert "rank 1: killed by signal SIGABRT (the first to fail)" in message
    assert "native code says goodbye" in message  # written to file descriptor 2
    assert "Fatal Python error: Aborted" in message and "_rank_one_aborts" in message  # faulthandler's stack
