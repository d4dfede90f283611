"""Each family the CPU backend of vLLM runs: a policy's weights synced into an engine started
on other weights give transformers' greedy tokens; a sync that fails mid-stream leaves an
engine that refuses to generate. One process per family (vLLM's process-wide state)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")
pytest.importorskip("megatron.core")

HERE = Path(__file__).parent
KINDS = ["llama3_vllm", "mistral_vllm", "mixtral_vllm", "qwen2_moe_vllm", "gemma3_vllm", "phi3_vllm",
         # The policy's MLA needs CUDA (r1core.models.policy.check_policy_supports), so the
         # sync has no source policy on CPU.
         pytest.param("deepseek_v3_vllm", marks=pytest.mark.skipif(
             not torch.cuda.is_available(),
             reason="the policy's multi-head latent attention (Megatron-Core MLA) needs CUDA"))]


@pytest.mark.slow
@pytest.mark.family_check("vLLM greedy after sync")
@pytest.mark.parametrize("kind", KINDS)
def test_policy_sync_gives_transformers_greedy_tokens(kind, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), VLLM_LOGGING_LEVEL="WARNING")
    proc = subprocess.run([sys.executable, str(HERE / "_family_sync_check.py"), kind, str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=900)
    match = re.search(r"^RESULT (.*)$", proc.stdout, re.M)
    assert proc.returncode == 0 and match, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = json.loads(match.group(1))
    assert result["before"] != result["want"], "the engine's start weights already agree: no proof"
    assert "refuses to generate until a complete sync succeeds" in result["refused"]
    assert result["got"] == result["want"]
