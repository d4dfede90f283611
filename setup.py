"""Build script: package layout and the compiled extension r1core._C.

Metadata lives in pyproject.toml. This file only adds what a static table cannot express:
the Triton kernels folder mapped to ``r1core.kernels`` and the C++/CUDA extension
``r1core._C`` built from ``csrc/`` with PyTorch's extension tooling.

What gets built:
- always (when torch is importable): the CPU kernels (``csrc/*.cpp``, ``csrc/cpu/*.cpp``);
- also the CUDA kernels (``csrc/cuda/*.cu``) when the installed torch is a CUDA build and a
  CUDA toolkit is found, unless ``R1CORE_SKIP_CUDA_BUILD=1``.
Environment switches:
- ``R1CORE_SKIP_CUDA_BUILD=1``: CPU kernels only, even on a CUDA machine.
- ``R1CORE_SKIP_EXTENSION=1``: no compiled extension at all (the ops use Triton/reference).
- ``R1CORE_CUDA_ARCHS``: ``;``-separated compute capabilities, default ``9.0a`` (Hopper with
  its arch-specific instructions); e.g. ``"8.0;9.0a"``.
- ``R1CORE_CPU_CAPABILITY``: vector ISA of the CPU kernels, ``avx2`` (default where the
  build machine has it), ``avx512`` or ``default`` (portable, slower).
- ``MAX_JOBS``: parallel compile jobs; by default bounded by the CPU count and by the free
  memory (one job per ~3 GiB for g++, ~6 GiB for nvcc).
The project installs with ``pip install --no-build-isolation -e .`` so that the extension
is built against the torch already installed (see the Makefile).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"

packages = find_packages(include=["r1core", "r1core.*"]) + ["r1core.kernels"]


def _note(message: str) -> None:
    print(f"r1core setup: {message}", file=sys.stderr)


def _load_build_config():
    # Loaded by path: importing the r1core package here would need its dependencies.
    spec = importlib.util.spec_from_file_location("_r1core_build_config", ROOT / "r1core" / "ops" / "_build_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _available_memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _bound_max_jobs(with_cuda: bool) -> None:
    """Set MAX_JOBS (read by torch's ninja build) from CPUs and free memory, if unset."""
    if os.environ.get("MAX_JOBS"):
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    memory = _available_memory_gib()
    per_job = 6.0 if with_cuda else 3.0  # observed peak RSS per compiler, rounded up
    jobs = cpus if memory is None else max(1, min(cpus, int(memory // per_job)))
    os.environ["MAX_JOBS"] = str(jobs)
    _note(f"MAX_JOBS={jobs} ({cpus} CPUs, {memory or 0:.0f} GiB available)")


def _cpu_capability_flags() -> tuple[list[str], str]:
    requested = os.environ.get("R1CORE_CPU_CAPABILITY", "").lower()
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return [], "default"
    if not requested:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
        requested = "avx2" if (" avx2" in cpuinfo and " fma" in cpuinfo) else "default"
    if requested == "avx2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"], "avx2"
    if requested == "avx512":
        flags = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"]
        return flags + ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"], "avx512"
    if requested != "default":
        raise SystemExit(f"R1CORE_CPU_CAPABILITY must be avx2, avx512 or default, got {requested!r}")
    return [], "default"


def extension_build():
    """``(ext_modules, cmdclass)`` for r1core._C, or empty ones when it cannot be built."""
    if os.environ.get("R1CORE_SKIP_EXTENSION") == "1":
        _note("R1CORE_SKIP_EXTENSION=1: not building r1core._C")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        _note(
            "torch is not importable, so r1core._C (the cpp/cuda backends) is not built; the ops "
            "will use Triton or the PyTorch reference. Install torch first, then "
            "`pip install --no-build-isolation -e .`"
        )
        return [], {}

    cuda_home = cpp_extension.CUDA_HOME
    skip_cuda = os.environ.get("R1CORE_SKIP_CUDA_BUILD") == "1"
    with_cuda = torch.version.cuda is not None and cuda_home is not None and not skip_cuda
    if torch.version.cuda is None:
        _note(f"torch {torch.__version__} is a CPU build: building the CPU kernels only")
    elif cuda_home is None:
        _note("no CUDA toolkit found (set CUDA_HOME): building the CPU kernels only")
    elif skip_cuda:
        _note("R1CORE_SKIP_CUDA_BUILD=1: building the CPU kernels only")

    config = _load_build_config()
    capability_flags, capability = _cpu_capability_flags()
    # Values go in unquoted (the ninja build passes flags through a shell, which would eat
    # quotes) and module.cpp stringifies them; they hold only [0-9a-z.+_] characters.
    defines = [f"-DR1CORE_SOURCE_HASH={config.source_hash(CSRC, with_cuda)}", f"-DR1CORE_TORCH_VERSION={torch.__version__}"]
    # Where the sources are, so that a development install can tell when its build went
    # stale; the installed package itself never looks for the checkout. Recorded only when
    # the path survives the unquoted pass through the shell.
    if re.fullmatch(r"[A-Za-z0-9._+/-]+", str(CSRC)) and "//" not in str(CSRC):
        defines.append(f"-DR1CORE_SOURCE_DIR={CSRC}")
    # -g0: Python's CFLAGS ask for debug info, which doubles compile time and .so size.
    cxx = ["-O3", "-g0", "-fopenmp", "-Wno-unknown-pragmas", "-fvisibility=hidden", *capability_flags, *defines]
    sources = [str(p.relative_to(ROOT)) for p in [CSRC / "r1core.cpp", CSRC / "module.cpp", *sorted((CSRC / "cpu").glob("*.cpp"))]]
    link = ["-fopenmp"]
    _bound_max_jobs(with_cuda)
    _note(f"CPU kernels for {capability}")
    if with_cuda:
        archs = os.environ.get("R1CORE_CUDA_ARCHS", config.DEFAULT_CUDA_ARCHS)
        try:
            gencode = config.gencode_flags(archs)
        except ValueError as error:
            raise SystemExit(f"R1CORE_CUDA_ARCHS: {error}") from None
        arch_list = "_".join(config.parse_archs(archs))
        cuda_defines = ["-DR1CORE_WITH_CUDA", f"-DR1CORE_CUDA_ARCHS={arch_list}", f"-DR1CORE_CUDA_VERSION={torch.version.cuda}"]
        nvcc = [*config.NVCC_FLAGS, *gencode, *defines, *cuda_defines]
        sources += [str(p.relative_to(ROOT)) for p in sorted((CSRC / "cuda").glob("*.cu"))]
        extension = cpp_extension.CUDAExtension(
            "r1core._C",
            sources,
            extra_compile_args={"cxx": cxx + cuda_defines, "nvcc": nvcc},
            extra_link_args=link,
        )
        _note(f"CUDA kernels for {archs} with {cuda_home}")
    else:
        extension = cpp_extension.CppExtension("r1core._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)
    return [extension], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = extension_build()
setup(packages=packages, ext_modules=ext_modules, cmdclass=cmdclass)
