"""Every csrc/**/*.cu file compiles with nvcc for sm_90a (compile only: no GPU is needed).

Runs wherever nvcc is on the PATH, with the flags setup.py uses, so a syntax or template
error in a kernel fails CI instead of waiting for a GPU machine.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _checker():
    spec = importlib.util.spec_from_file_location("check_cuda_compile", REPO_ROOT / "csrc" / "check_cuda_compile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_cuda_source_is_checked():
    sources = _checker().cuda_sources()
    names = {path.name for path in sources}
    assert {"fused_logprobs.cu", "grpo_loss.cu", "group_advantages.cu"} <= names


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")
def test_cuda_sources_compile_for_sm90a():
    checker = _checker()
    jobs = int(os.environ.get("MAX_JOBS", str(min(3, os.cpu_count() or 1))))
    results = checker.compile_all("9.0a", jobs, shutil.which("nvcc"))
    failures = [f"{source.name}:\n{output[-4000:]}" for source, code, output, _ in results if code != 0]
    assert not failures, "\n\n".join(failures)
