"""What the machine offers r1core's GPU tests and benchmarks: device, peaks, versions, and
which peers and toolchain pieces are present (the first step of ``make bench-gpu``).

    python3 -m perf.gpu_environment [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import shutil
import subprocess
from typing import Any

import torch

from perf.harness import peak_hbm_tbps_for, peak_tflops_for

PEERS = {
    "triton": "triton",
    "liger_kernel": "Liger-Kernel (fused linear cross-entropy rows)",
    "quack": "QuACK (cross-entropy rows)",
    "megatron.core": "megatron-core (policy train step)",
    "transformers": "transformers (random Qwen3 checkpoint for the policy step)",
}


def _version(module: str) -> str | None:
    try:
        imported = importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 (an import may fail in any way; report it)
        return None if isinstance(error, ImportError) else f"import failed: {type(error).__name__}: {error}"
    return str(getattr(imported, "__version__", "present"))


def _command(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"failed: {error}"
    return (out.stdout or out.stderr).strip().splitlines()[-1] if (out.stdout or out.stderr) else ""


def describe() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "nvcc": _command(["nvcc", "--version"]),
        "ninja": _command(["ninja", "--version"]),
        "cpus": __import__("os").cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            device=props.name,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            peak_bf16_tflops=peak_tflops_for(props.name),
            peak_hbm_tbps=peak_hbm_tbps_for(props.name),
        )
    else:
        info["device"] = f"CPU {platform.machine()}"
    info["packages"] = {name: _version(name) for name in PEERS}
    try:
        from r1core.kernels import fused_logprobs as kernels

        info["fp32_accumulation"] = kernels.fp32_accumulation_path(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    except Exception as error:  # noqa: BLE001
        info["fp32_accumulation"] = f"unknown ({type(error).__name__}: {error})"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="also write the description here")
    args = parser.parse_args()
    info = describe()
    for key, value in info.items():
        print(f"{key:20s} {value}")
    missing = [PEERS[name] for name, version in info["packages"].items() if version is None]
    if missing:
        print("absent (carry their wheels in .whl/ to include them): " + "; ".join(missing))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(info, handle, indent=2)


if __name__ == "__main__":
    main()
