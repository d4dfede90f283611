"""Measurement helpers shared by the op tests and the benchmarks.

:func:`peak_memory_bytes` answers "how much memory did this call need above what was live
before it" on CUDA (the caching allocator's peak counter) and on CPU (the profiler's
allocation events, which also see the buffers that custom ops allocate internally, unlike a
``TorchDispatchMode``, which is switched off while a custom op runs).
"""

from __future__ import annotations

import gc
from typing import Any, Callable

import torch


def _cpu_peak_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    from torch.profiler import ProfilerActivity, profile

    # Frees of blocks from an earlier session (the profiler remembers their sizes) would
    # count as negative usage: collect pending garbage first, and keep the collector from
    # releasing older cycles in the middle of the measured call.
    gc.collect()
    gc.disable()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = fn()
    finally:
        gc.enable()
    # The kineto events carry the signed size of every CPU allocation and free in time
    # order; the running sum's maximum is the peak above the level at entry.
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return result, peak


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | str) -> tuple[Any, int]:
    """Run ``fn()``; return ``(its result, peak bytes allocated above the level at entry)``.

    Memory that ``fn`` returns (outputs, ``.grad`` fields) counts while it is live, so
    callers subtract what they expect the outputs to take. ``fn`` runs twice (a warm-up
    first), so it must be repeatable.
    """
    device = torch.device(device)
    # Warm-up: steady state only. On CUDA it keeps one-time costs out (autotuning's scratch
    # buffers, the cuBLAS workspace). On CPU it matters for correctness: the profiler
    # remembers blocks it saw allocated, even in earlier sessions, and would record their
    # late frees (e.g. of buffers the Triton interpreter keeps until its next launch) as
    # negative usage; the unprofiled call releases such leftovers, and blocks allocated
    # outside any session are freed without an event.
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - base
    return _cpu_peak_bytes(fn)
