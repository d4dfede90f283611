"""Compile every ``csrc/**/*.cu`` file with nvcc (``-c`` only) for the given archs.

Nothing CUDA can run on a machine without a GPU, but a CPU build of torch ships the
ATen/c10 CUDA headers, so syntax and template errors in the kernels are caught here with
the same flags ``setup.py`` uses (torch's COMMON_NVCC_FLAGS plus r1core's own).

    python csrc/check_cuda_compile.py [--archs "9.0a"] [--jobs 2]

Exits non-zero, printing nvcc's errors, when a file fails to compile.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CSRC = Path(__file__).resolve().parent
ROOT = CSRC.parent


def _build_config():
    spec = importlib.util.spec_from_file_location("_r1core_build_config", ROOT / "r1core" / "ops" / "_build_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cuda_sources() -> list[Path]:
    return sorted(CSRC.rglob("*.cu"))


# A CPU build of torch ships c10/cuda/*.h but not this header, which CMake generates for
# CUDA builds (where it holds exactly this define). Supplied for the compile check only.
_CMAKE_MACROS = "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n"


def shim_include_dir(directory: Path) -> Path | None:
    """Writes the generated c10 CUDA header under ``directory`` if torch lacks it."""
    from torch.utils import cpp_extension

    relative = Path("c10/cuda/impl/cuda_cmake_macros.h")
    if any((Path(p) / relative).exists() for p in cpp_extension.include_paths()):
        return None
    (directory / relative).parent.mkdir(parents=True, exist_ok=True)
    (directory / relative).write_text(_CMAKE_MACROS)
    return directory


def nvcc_command(source: Path, output: Path, archs: str, nvcc: str = "nvcc", shim: Path | None = None) -> list[str]:
    """The nvcc command line compiling ``source`` to the object ``output``."""
    from torch.utils import cpp_extension

    config = _build_config()
    includes = cpp_extension.include_paths() + [sysconfig.get_paths()["include"]] + ([str(shim)] if shim else [])
    host_flags = ["-O3", "-fPIC", "-fopenmp"]
    command = [nvcc, "-c", str(source), "-o", str(output)]
    command += [f"-I{path}" for path in includes]
    command += list(cpp_extension.COMMON_NVCC_FLAGS) + config.NVCC_FLAGS + config.gencode_flags(archs)
    command += ["-Xcompiler", ",".join(host_flags), "-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H"]
    return command


def compile_all(archs: str, jobs: int, nvcc: str = "nvcc") -> list[tuple[Path, int, str, float]]:
    """Compile every .cu file; returns ``(file, returncode, output, seconds)`` per file."""
    results = []
    with tempfile.TemporaryDirectory(prefix="r1core-nvcc-") as tmp:
        shim = shim_include_dir(Path(tmp) / "shim")

        def run(source: Path):
            start = time.perf_counter()
            output = Path(tmp) / (source.stem + ".o")
            command = nvcc_command(source, output, archs, nvcc, shim)
            proc = subprocess.run(command, capture_output=True, text=True)
            return source, proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(run, cuda_sources()))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=os.environ.get("R1CORE_CUDA_ARCHS", "9.0a"))
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", "2")))
    args = parser.parse_args()
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("nvcc is not on the PATH", file=sys.stderr)
        return 2
    failed = 0
    for source, code, output, seconds in compile_all(args.archs, args.jobs, nvcc):
        status = "ok" if code == 0 else "FAILED"
        print(f"{status:6s} {source.relative_to(ROOT)} ({seconds:.1f} s)")
        if code != 0:
            failed += 1
            print(output, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
