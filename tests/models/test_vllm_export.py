"""vLLM (CPU) loads the exported checkpoint and scores prompts like the policy does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_checkpoint

HERE = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["qwen2_head64", "qwen3_moe_head64"])
def test_vllm_loads_export_and_agrees(kind, tmp_path):
    pytest.importorskip("vllm")
    hf_dir = write_checkpoint(kind, tmp_path / kind)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, str(HERE / "_vllm_check.py"), str(hf_dir), str(tmp_path / "export")],
                          env=env, capture_output=True, text=True, timeout=600)
    match = re.search(r"MAX_ABS_DIFF (\S+)", proc.stdout)
    assert proc.returncode == 0 and match, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert float(match.group(1)) <= 1e-4
