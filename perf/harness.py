"""Shared benchmark harness: timing, hardware peaks, and result files.

Every benchmark script reports, per case and implementation: median milliseconds, achieved
TFLOP/s or GB/s with the FLOP/byte basis stated, the fraction of the hardware peak, and peak
extra memory. Results are written to ``perf/results/<op>_<device>_<date>.{json,md}`` with the
versions that produced them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

# R1CORE_RESULTS_DIR sends result files elsewhere (the CPU rehearsal of bench-gpu does).
RESULTS_DIR = Path(os.environ.get("R1CORE_RESULTS_DIR") or Path(__file__).resolve().parent / "results")

# H100 SXM dense peaks (the targets of r1core's kernels).
H100_BF16_TFLOPS = 989.0
H100_HBM_TBPS = 3.35

# Dense bf16 tensor-core peak (TF/s) and HBM bandwidth (TB/s) from the vendors' data sheets,
# by a substring of the device name, most specific first. The H200 has the H100 SXM's compute
# and faster memory.
DEVICE_PEAKS = (
    ("H100 PCIe", 756.0, 2.0),
    ("H100 NVL", 835.0, 3.9),
    ("H200", 989.0, 4.8),
    ("H100", 989.0, 3.35),
    ("GH200", 989.0, 4.0),
    ("A100", 312.0, 2.0),
    ("L40S", 362.0, 0.86),
)


def peak_tflops_for(device_name: str) -> float | None:
    """Dense bf16 peak of a device by its name, or None when it is not in :data:`DEVICE_PEAKS`."""
    for key, tflops, _ in DEVICE_PEAKS:
        if key in device_name:
            return tflops
    return None


def peak_hbm_tbps_for(device_name: str) -> float | None:
    for key, _, tbps in DEVICE_PEAKS:
        if key in device_name:
            return tbps
    return None


@dataclass
class Result:
    case: str
    impl: str
    ms: float | None
    tflops: float | None = None
    gbps: float | None = None
    peak_fraction: float | None = None
    extra_memory_mib: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def device_slug(device: torch.device) -> str:
    name = device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    return info


def is_h100(device: torch.device) -> bool:
    return device.type == "cuda" and "H100" in torch.cuda.get_device_name(device)


def time_ms(fn: Callable[[], Any], device: torch.device, *, warmup: int = 3, reps: int = 10) -> float:
    """Median wall time of ``fn()`` in milliseconds.

    On CUDA this uses ``triton.testing.do_bench`` (CUDA events, L2 flushed between runs); on
    CPU a ``perf_counter`` loop.
    """
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=max(warmup, 25), rep=max(reps, 100), return_mode="median"))
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def peak_extra_memory_mib(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak memory allocated by ``fn()`` above what was allocated before it, in MiB (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    return (peak - base) / 2**20


def write_results(op: str, device: torch.device, results: list[Result], meta: dict[str, Any]) -> Path:
    """Write ``<op>_<device>_<date>.json`` and ``.md`` under perf/results/; return the json path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    stem = f"{op}_{device_slug(device)}_{env['date'][:10]}"
    payload = {"op": op, "environment": env, "meta": meta, "results": [asdict(r) for r in results]}
    json_path = RESULTS_DIR / f"{stem}.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    lines = [f"# {op} on {env['device']}", "", f"{env['date']}; torch {env['torch']}, triton {env['triton']}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| case | impl | ms | TFLOP/s | GB/s | % of peak | extra MiB | note |", "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
    for r in results:
        lines.append(
            f"| {r.case} | {r.impl} | {fmt(r.ms, '.3f')} | {fmt(r.tflops, '.1f')} | {fmt(r.gbps, '.1f')} | "
            f"{fmt(None if r.peak_fraction is None else 100 * r.peak_fraction, '.1f')} | {fmt(r.extra_memory_mib, '.0f')} | {r.note} |"
        )
    (RESULTS_DIR / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return json_path
