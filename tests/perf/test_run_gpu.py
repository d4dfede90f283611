"""``make bench-gpu``: the plan with its budgets, and a CPU rehearsal of every step.

The rehearsal runs each step's real code (environment report, install check, background
build and wait, test selection, every benchmark script, the policy step, the summary) on the
CPU at tiny shapes, Triton kernels in the interpreter, so that the one GPU call a lent
machine gets does not fail on a Python error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_prints_every_step_with_its_budget():
    from perf import run_gpu

    run = subprocess.run(["make", "-s", "bench-gpu", "--dry-run", f"PYTHON={sys.executable}", "BENCH_BUDGET=300"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "total budget 300 s" in run.stdout
    for step in run_gpu.STEPS:
        line = next(line for line in run.stdout.splitlines() if line.startswith(step.name + " "))
        assert f"{step.budget_s:.0f}" in line.split()[1:3], line
    assert "bench-logprobs-16384" in run.stdout and "summary" in run.stdout


def test_plan_never_exceeds_the_budget():
    from perf import run_gpu

    for budget in (120.0, 420.0, 900.0):
        lines = run_gpu.plan(run_gpu.STEPS, budget).splitlines()
        limits = {line.split()[0]: float(line.split()[3]) for line in lines[3:-1]}
        foreground = sum(v for k, v in limits.items() if not next(s for s in run_gpu.STEPS if s.name == k).background)
        assert foreground <= budget - run_gpu.SUMMARY_RESERVE_S + 1e-6, (budget, limits)


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_step(tmp_path):
    env = dict(os.environ, R1CORE_RESULTS_DIR=str(tmp_path), HF_HUB_OFFLINE="1")
    env.pop("OUT", None)
    # The steps' GPU budgets, scaled: on a busy CPU runner the interpreter's steps take longer.
    run = subprocess.run([sys.executable, "-m", "perf.run_gpu", "--rehearsal", "--budget", "840",
                          "--step-time-scale", "6"], cwd=REPO, capture_output=True, text=True, env=env, timeout=880)
    logs = tmp_path / "logs" / "rehearsal"
    detail = run.stdout[-4000:] + "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(logs.glob("*.log")))
    assert run.returncode == 0, detail
    (summary,) = tmp_path.glob("bench_gpu_rehearsal-cpu_*.json")
    payload = json.loads(summary.read_text())
    from perf import run_gpu

    assert [o["step"] for o in payload["steps"]] == [
        "environment", "install", "op-tests", "bench-advantages", "bench-logprobs-4096", "build-extension",
        "extension-tests", "bench-logprobs-16384", "bench-grpo-loss", "bench-policy-step",
    ]
    assert {o["step"] for o in payload["steps"]} == {s.name for s in run_gpu.STEPS}
    assert all(o["status"] == "ok" for o in payload["steps"]), payload["steps"]
    ops = {row["op"] for row in payload["rows"]}
    assert {"fused_logprobs_n4096", "fused_logprobs_n16384", "fused_grpo_loss", "group_advantages", "policy_train_step"} <= ops
    impls = {row["impl"] for row in payload["rows"] if row["op"] == "fused_logprobs_n4096"}
    assert {"r1core triton (interpreter)", "r1core triton-persistent (interpreter)", "r1core reference"} <= impls
    assert summary.with_suffix(".md").read_text().count("| fused_logprobs_n16384 |") >= 4
