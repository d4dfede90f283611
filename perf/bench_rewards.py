"""Reward throughput on 2 cores, and bounded time on adversarial answers.

1. Throughput of ``math_accuracy`` on the 6076 graded responses of ``reward_agreement.py``:
   in-process on one core (the baseline) and through ``RewardPool`` with 2 workers for
   several chunk sizes; also ``r1_format`` through the pool (the pool's own overhead).
2. Adversarial answers (``adversarial_answers.py``: nested fractions, power towers, megabyte
   strings, broken braces, lone surrogates): each scored alone (latency and outcome), then all
   mixed into a batch of ordinary responses (throughput under attack). Checks: no exception
   reaches the caller, every score is a float, every case ends within its time bound.
3. Cost of the code sandbox per program run (``print(1)``): a plain ``subprocess.run`` of the
   same interpreter (the baseline), ``run_program`` unisolated, and ``run_program`` with
   namespaces, with and without its cgroup and seccomp filter. Variants are interleaved run by
   run, so load from other jobs spreads over all of them; wall time per run (minimum, median,
   p90) is reported.

The machine is shared; the load average before and after is recorded with the numbers.

    python perf/bench_rewards.py [--quick]      (or python -m perf.bench_rewards, perf/run_all.py)
    python perf/bench_rewards.py --sandbox-only --sandbox-runs 100 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adversarial_answers import adversarial_cases, normal_cases  # noqa: E402
from reward_agreement import REPO_ROOT, data_dir, environment_info, load_gsm8k, load_math_cot, subset  # noqa: E402


def throughput(responses: list[str], golds: list[str], chunk_sizes: list[int]) -> list[dict]:
    """Responses per second in-process and through the pool (2 workers) per chunk size."""
    from r1core.rewards import RewardPool, RewardPoolConfig, get_reward, math_accuracy, scoring_in_process

    rows = []
    with scoring_in_process():  # the baseline: no worker, no time bound
        math_accuracy(responses[:50], golds[:50])  # import and grammar set-up outside the timing
        started = time.perf_counter()
        math_accuracy(responses, golds)
        elapsed = time.perf_counter() - started
    rows.append({"reward": "math_accuracy", "mode": "in-process, 1 core", "chunk_size": None,
                 "seconds": elapsed, "responses_per_second": len(responses) / elapsed})
    for chunk_size in chunk_sizes:
        config = RewardPoolConfig(num_workers=2, chunk_size=chunk_size)
        with RewardPool(config) as pool:
            pool.score(get_reward("math_accuracy"), ["\\boxed{1}"] * 4, ["1"] * 4)  # workers up
            for name in ("math_accuracy", "r1_format"):
                started = time.perf_counter()
                result = pool.score(get_reward(name), responses, golds)
                elapsed = time.perf_counter() - started
                rows.append({"reward": name, "mode": "RewardPool, 2 workers", "chunk_size": chunk_size,
                             "seconds": elapsed, "responses_per_second": len(responses) / elapsed,
                             "pool_failures": result.num_failed})
    return rows


def adversarial(sample_timeout_s: float, normal_responses: list[str], normal_golds: list[str]) -> dict:
    """Per-case latency and outcome, then one mixed batch."""
    from r1core.rewards import RewardPool, RewardPoolConfig, get_reward

    reward = get_reward("math_accuracy")
    cases = adversarial_cases()
    config = RewardPoolConfig(num_workers=2, sample_timeout_s=sample_timeout_s, chunk_size=8)
    # Bound for one sample alone: its timeout, plus killing and replacing a worker (which is
    # outside the sample's budget) and scheduling slack on a loaded machine.
    single_bound_s = sample_timeout_s + 5.0
    per_case = []
    with RewardPool(config) as pool:
        pool.score(reward, ["\\boxed{1}"], ["1"])
        for case in cases:
            started = time.perf_counter()
            try:
                result = pool.score(reward, [case.response], [case.gold])
                score, reason, error = result.scores[0], result.reasons[0], None
            except Exception as caught:  # must never happen; recorded, and fails the check
                score, reason, error = None, None, repr(caught)
            elapsed = time.perf_counter() - started
            timed_out = reason is not None and reason.startswith("timeout")
            outcome_ok = error is None and isinstance(score, float) and (
                score == case.expected or (case.may_time_out and timed_out and score == 0.0))
            per_case.append({"name": case.name, "response_chars": len(case.response), "score": score,
                             "expected": case.expected, "reason": reason, "error": error,
                             "seconds": elapsed, "within_bound": elapsed <= single_bound_s,
                             "outcome_ok": outcome_ok})
        # Mixed batch: every adversarial case among ordinary responses.
        responses = normal_responses + [case.response for case in cases]
        golds = normal_golds + [case.gold for case in cases]
        started = time.perf_counter()
        mixed = pool.score(reward, responses, golds)
        mixed_seconds = time.perf_counter() - started
        normal_ok = mixed.scores[: len(normal_responses)]
        check_pool = pool.score(reward, [r for r, _ in normal_cases()], [g for _, g in normal_cases()])
    return {
        "sample_timeout_s": sample_timeout_s,
        "single_case_bound_s": single_bound_s,
        "cases": per_case,
        "all_within_bound": all(row["within_bound"] for row in per_case),
        "all_outcomes_ok": all(row["outcome_ok"] for row in per_case),
        "no_exception_reached_caller": all(row["error"] is None for row in per_case),
        "mixed_batch": {"num_normal": len(normal_responses), "num_adversarial": len(cases),
                        "seconds": mixed_seconds, "responses_per_second": len(responses) / mixed_seconds,
                        "pool_failures": mixed.num_failed,
                        "normal_failures": sum(r is not None for r in mixed.reasons[: len(normal_responses)]),
                        "normal_scored_correct": sum(normal_ok)},
        "pool_scores_after_attack": check_pool.scores,
    }


def sandbox_overhead(runs: int) -> dict:
    """Milliseconds per ``print(1)`` program run under each isolation variant (interleaved)."""
    import statistics
    import subprocess

    from r1core.rewards import SandboxConfig, isolation_plan, run_program

    variants = {"namespaces (default)": SandboxConfig(), "namespaces, no cgroup": SandboxConfig(cgroups="off"),
                "namespaces, no seccomp": SandboxConfig(seccomp="off"), "unisolated run_program": SandboxConfig(isolation="none")}
    plans = {}
    for name, config in list(variants.items()):
        try:
            plans[name] = isolation_plan(config).describe()
        except Exception as error:  # e.g. cgroups="off" refused for a root-owned sandbox
            plans[name] = {"refused": str(error)[:200]}
            del variants[name]
    python = isolation_plan(SandboxConfig(isolation="none")).python

    def plain() -> None:
        subprocess.run([python, "-I", "-c", "print(1)"], capture_output=True, check=True)

    calls = {"plain subprocess.run": plain}
    for name, config in variants.items():
        calls[name] = lambda config=config: run_program("print(1)", "", config)
    for call in calls.values():  # warm-up: probes, page cache
        call()
    wall: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            wall[name].append(time.perf_counter() - started)
    rows = []
    for name, times in wall.items():
        times = sorted(times)
        rows.append({"variant": name, "runs": runs, "min_ms": 1000 * times[0],
                     "median_ms": 1000 * statistics.median(times), "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))]})
    for row in rows:
        row["overhead_min_ms"] = row["min_ms"] - rows[0]["min_ms"]
        row["overhead_median_ms"] = row["median_ms"] - rows[0]["median_ms"]
    return {"python": python, "rows": rows, "isolation": plans}


def sandbox_markdown(sandbox: dict) -> list[str]:
    lines = ["", f"## Code sandbox: cost per program run (`print(1)`, {sandbox['rows'][0]['runs']} runs each, "
             f"interleaved; interpreter {sandbox['python']})", "",
             "| variant | min ms | median ms | p90 ms | over plain (min / median), ms |",
             "| --- | --- | --- | --- | --- |"]
    for row in sandbox["rows"]:
        lines.append(f"| {row['variant']} | {row['min_ms']:.1f} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | "
                     f"{row['overhead_min_ms']:+.1f} / {row['overhead_median_ms']:+.1f} |")
    lines += ["", "Isolation per variant: " + json.dumps(sandbox["isolation"])]
    return lines


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# Reward throughput and adversarial answers ({env['date']}, {env['machine']})", "",
             "Versions: python " + env["python"] + ", " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()),
             f"Load average (1 min) before/after: {report['load_before']:.1f} / {report['load_after']:.1f} "
             "on a machine shared with other jobs: absolute numbers are noisy.", "",
             f"## Throughput on {report['num_responses']} graded MATH + GSM8K responses", "",
             "| reward | mode | chunk | seconds | responses/s |", "| --- | --- | --- | --- | --- |"]
    for row in report["throughput"]:
        lines.append(f"| {row['reward']} | {row['mode']} | {row['chunk_size'] or '-'} | {row['seconds']:.2f} | "
                     f"{row['responses_per_second']:.0f} |")
    adv = report["adversarial"]
    lines += ["", f"## Adversarial answers (sample timeout {adv['sample_timeout_s']:g} s, bound per case "
              f"{adv['single_case_bound_s']:g} s)", "",
              f"All within bound: {adv['all_within_bound']}; outcomes as expected: {adv['all_outcomes_ok']}; "
              f"no exception reached the caller: {adv['no_exception_reached_caller']}.", "",
              "| case | chars | score | reason | seconds |", "| --- | --- | --- | --- | --- |"]
    for row in adv["cases"]:
        lines.append(f"| {row['name']} | {row['response_chars']} | {row['score']} | {row['reason'] or '-'} | "
                     f"{row['seconds']:.2f} |")
    mixed = adv["mixed_batch"]
    lines += ["", f"Mixed batch: {mixed['num_normal']} ordinary + {mixed['num_adversarial']} adversarial "
              f"responses in {mixed['seconds']:.1f} s ({mixed['responses_per_second']:.0f} responses/s); "
              f"pool failures {mixed['pool_failures']} (ordinary responses failed: {mixed['normal_failures']}). "
              f"Scores right after the attack: {adv['pool_scores_after_attack']}."]
    if "sandbox" in report:
        lines += sandbox_markdown(report["sandbox"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 responses, one chunk size")
    parser.add_argument("--sample-timeout", type=float, default=5.0)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "perf" / "results")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--sandbox-runs", type=int, default=50, help="program runs per sandbox variant")
    parser.add_argument("--sandbox-only", action="store_true", help="only the code sandbox's cost per run")
    args = parser.parse_args(argv)
    if args.sandbox_only:
        load_before = os.getloadavg()[0]
        sandbox = sandbox_overhead(args.sandbox_runs)
        print(f"Load average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f}")
        print("\n".join(sandbox_markdown(sandbox)))
        return 0
    root = data_dir()
    samples = load_math_cot(root) + load_gsm8k(root)
    if args.quick:
        samples = subset(samples, 600)
    responses, golds = [s.response for s in samples], [s.gold for s in samples]
    load_before = os.getloadavg()[0]
    report = {"environment": environment_info(), "load_before": load_before, "num_responses": len(samples)}
    report["throughput"] = throughput(responses, golds, [8] if args.quick else [1, 8, 32])
    mixed = subset(samples, 1000)
    report["adversarial"] = adversarial(args.sample_timeout, [s.response for s in mixed], [s.gold for s in mixed])
    report["sandbox"] = sandbox_overhead(10 if args.quick else args.sandbox_runs)
    report["load_after"] = os.getloadavg()[0]
    text = markdown(report)
    print(text)
    if not args.no_write:
        stem = f"rewards_cpu_{report['environment']['date'][:10]}"  # <op>_<device>_<date>, as perf/harness.py
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1, ensure_ascii=True) + "\n")
        (args.out_dir / f"{stem}.md").write_text(text)
        print(f"wrote {args.out_dir / stem}.json and .md")
    adv = report["adversarial"]
    return 0 if adv["all_within_bound"] and adv["all_outcomes_ok"] and adv["no_exception_reached_caller"] else 1


if __name__ == "__main__":
    sys.exit(main())
