"""Kernel-launch accounting for the benchmarks: how many device kernels one call issues and
how long they run on the device, from ``torch.profiler`` (CUDA only)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def launches_per_call(fn: Callable[[], Any], device: torch.device, calls: int = 5) -> tuple[float | None, float | None]:
    """``(kernels per call, device microseconds per call)`` of ``fn()``; ``(None, None)`` off CUDA.

    Counts every CUDA activity the profiler records (kernels, memsets, memcpys): each is a
    launch the host issues. ``fn`` must have been warmed up (compiled) already.
    """
    if device.type != "cuda":
        return None, None
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(device)
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    device_us = sum(e.device_time_total for e in events) if events else 0.0
    return len(events) / calls, device_us / calls


def host_us_per_call(fn: Callable[[], Any], device: torch.device, calls: int = 200, chunks: int = 5) -> float:
    """Wall-clock microseconds per call over back-to-back calls, synchronising once per chunk
    of ``calls // chunks`` calls: the rate a training step can issue this op (host overhead
    where it exceeds the device time). Median over the chunks, so one stall of a shared
    machine does not decide the figure."""
    fn()
    per_chunk = max(1, calls // chunks)
    samples = []
    for _ in range(chunks):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(per_chunk):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append((time.perf_counter() - start) / per_chunk * 1e6)
    return statistics.median(samples)
