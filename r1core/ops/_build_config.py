"""Build configuration of the compiled extension ``r1core._C``, shared by ``setup.py``,
``r1core/ops/_cpp.py`` and the nvcc compile check (``csrc/check_cuda_compile.py``).

``setup.py`` bakes :func:`source_hash` of the sources it compiles into the extension;
``_cpp.py`` recomputes it from the source tree beside an editable install and refuses a
build whose hash differs (a stale build: the sources changed and ``pip install`` was not
re-run). This file imports nothing from r1core, so ``setup.py`` can load it by path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SOURCE_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")
DEFAULT_CUDA_ARCHS = "9.0a"

# nvcc flags of r1core's CUDA kernels (torch adds its own COMMON_NVCC_FLAGS). No fast-math:
# the kernels must match the reference, and expf/log with -use_fast_math do not.
NVCC_FLAGS = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo", "-DR1CORE_WITH_CUDA"]


def source_files(csrc_dir: Path, with_cuda: bool) -> list[Path]:
    """The sources of a build, sorted: everything under ``csrc_dir``, without ``cuda/`` for a
    CPU-only build (so editing a ``.cu`` file does not make a CPU build stale)."""
    root = Path(csrc_dir)
    files = [p for p in root.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()]
    if not with_cuda:
        files = [p for p in files if "cuda" not in p.relative_to(root).parts[:-1]]
    return sorted(files)


def source_hash(csrc_dir: Path, with_cuda: bool) -> str:
    """First 16 hex digits of the SHA-256 over the relative paths and bytes of the sources."""
    digest = hashlib.sha256(b"cuda" if with_cuda else b"cpu")
    root = Path(csrc_dir)
    for path in source_files(root, with_cuda):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def parse_archs(archs: str) -> list[str]:
    """``"8.0;9.0a"`` -> ``["8.0", "9.0a"]``; raises ``ValueError`` on anything else."""
    parsed = [a.strip() for a in archs.split(";") if a.strip()]
    for arch in parsed:
        major, _, minor = arch.partition(".")
        if not (major.isdigit() and minor.rstrip("af").isdigit()):
            raise ValueError(f"CUDA arch {arch!r} is not a compute capability like 9.0a (from {archs!r})")
    if not parsed:
        raise ValueError("the list of CUDA archs is empty")
    return parsed


def gencode_flags(archs: str) -> list[str]:
    """nvcc ``-gencode`` flags for ``"9.0a"``-style compute capabilities (``;``-separated)."""
    flags = []
    for arch in parse_archs(archs):
        number = arch.replace(".", "")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
    return flags
