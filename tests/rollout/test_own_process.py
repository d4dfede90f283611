"""Weight sync with the engine core in its own (spawned) process.

The engine runs in a separate interpreter (the CPU platform spawns its engine core), so
the staging file crosses a real process boundary. Its outputs after the sync must equal
a fresh in-process engine's bitwise: same weights, same kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.rollout.conftest import KINDS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_own_process_sync_matches_fresh_engine(tmp_path, checkpoints, fresh_reference):
    dirs = []
    for kind in KINDS:
        dirs += [checkpoints(kind).initial_dir, checkpoints(kind).updated_dir]
    out = tmp_path / "own_process.json"
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1",
               PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.rollout.own_process_sync", str(out), *dirs],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert len(results) == len(KINDS)
    for kind, result in zip(KINDS, results):
        reference = [[tokens, logprobs] for tokens, logprobs in fresh_reference(kind)]
        assert result["after"] != result["before"], kind
        assert result["after"] == reference, kind  # tokens and float log-probs, exactly
        assert result["num_buckets"] > 1 and result["version"] == "1"
