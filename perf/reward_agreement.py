"""Agreement of ``math_accuracy`` with independent grades of real model responses.

Data (``$R1CORE_DATA_DIR`` or ``<repo>/../shared/data``):
- ``graded_responses/math_cot_100.jsonl``: 100 MATH problems x 8 responses, grade ``score``;
  gold = the row's ``gt``.
- ``graded_responses/gsm8k_model_solutions.jsonl``: 1319 GSM8K test problems x 4 solutions,
  grade ``is_correct``; gold = the GSM8K test ``answer`` field (``... #### N``), from
  ``gsm8k/test.jsonl``, row for row (the questions are checked to be the same).

Scoring goes through ``RewardPool`` (2 workers), the path a trainer uses. Every disagreement
is listed with its gold, the end of the response and r1core's reason; the ones examined by
hand carry an explanation (``KNOWN_DISAGREEMENTS``), any other is flagged UNEXPLAINED.

    python perf/reward_agreement.py            # all 6076 responses, writes perf/results/
                                               # reward_agreement_cpu_<date>.{json,md}
    python perf/reward_agreement.py --subset 200 --no-write
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GSM8K_SOLUTION_KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
THRESHOLDS = {"math_cot_100": 0.995, "gsm8k_model_solutions": 1.0}

# (source, problem index, response index) -> why r1core and the grader disagree.
KNOWN_DISAGREEMENTS = {
    ("math_cot_100", 72, 7): (
        "Grader error. 49,994/7 + 20,006/7 = 70,000/7 = 10,000; the response boxes 10000 and the "
        "gold is written 10{,}000. The grader compared its normalised strings ('10000' vs "
        "'10{,}000') and marked it wrong; math-verify parses 10{,}000 as the number 10000."
    ),
}


@dataclass(frozen=True)
class GradedSample:
    """One graded response: where it comes from, its text, the gold and the grader's verdict."""

    source: str
    problem_index: int
    response_index: int
    response: str
    gold: str
    grade: bool


def data_dir() -> Path:
    """The shared benchmark data folder."""
    return Path(os.environ.get("R1CORE_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_math_cot(root: Path) -> list[GradedSample]:
    """The 800 graded MATH responses."""
    samples = []
    for problem, row in enumerate(_read_jsonl(root / "graded_responses" / "math_cot_100.jsonl")):
        for index, (response, grade) in enumerate(zip(row["code"], row["score"], strict=True)):
            samples.append(GradedSample("math_cot_100", problem, index, response, row["gt"], bool(grade)))
    return samples


def load_gsm8k(root: Path) -> list[GradedSample]:
    """The 5276 graded GSM8K solutions, with the GSM8K test answers as golds."""
    graded = _read_jsonl(root / "graded_responses" / "gsm8k_model_solutions.jsonl")
    test = _read_jsonl(root / "gsm8k" / "test.jsonl")
    if len(graded) != len(test) or any(g["question"] != t["question"] for g, t in zip(graded, test)):
        raise ValueError("gsm8k_model_solutions.jsonl and gsm8k/test.jsonl are not row-aligned")
    samples = []
    for problem, (row, reference) in enumerate(zip(graded, test)):
        for index, key in enumerate(GSM8K_SOLUTION_KEYS):
            solution = row[key]
            samples.append(GradedSample("gsm8k_model_solutions", problem, index, solution["solution"],
                                        reference["answer"], bool(solution["is_correct"])))
    return samples


def subset(samples: list[GradedSample], count: int | None) -> list[GradedSample]:
    """Every k-th sample so that about ``count`` remain (all when count is None)."""
    if count is None or count >= len(samples):
        return samples
    step = len(samples) / count
    return [samples[int(i * step)] for i in range(count)]


def measure(samples: list[GradedSample], num_workers: int = 2, sample_timeout_s: float = 10.0) -> dict:
    """Score ``samples`` through a RewardPool; agreement per source and every disagreement."""
    from r1core.rewards import MathAccuracyConfig, RewardPool, RewardPoolConfig, get_reward
    from r1core.rewards.math import score_math_answer

    reward = get_reward("math_accuracy")
    config = RewardPoolConfig(num_workers=num_workers, sample_timeout_s=sample_timeout_s)
    with RewardPool(config) as pool:
        pool.score(reward, ["\\boxed{1}"], ["1"])  # workers up and warm before timing
        started = time.perf_counter()
        result = pool.score(reward, [s.response for s in samples], [s.gold for s in samples])
        elapsed = time.perf_counter() - started
    sources: dict[str, dict] = {}
    for sample, score, failure in zip(samples, result.scores, result.reasons):
        stats = sources.setdefault(sample.source, {"total": 0, "agree": 0, "disagreements": []})
        stats["total"] += 1
        if (score == 1.0) == sample.grade:
            stats["agree"] += 1
            continue
        key = (sample.source, sample.problem_index, sample.response_index)
        stats["disagreements"].append({
            "problem_index": sample.problem_index,
            "response_index": sample.response_index,
            "gold": sample.gold[-80:],
            "response_end": sample.response[-240:],
            "grader": sample.grade,
            "r1core_score": score,
            "r1core_reason": failure or score_math_answer(sample.response, sample.gold, MathAccuracyConfig())[1],
            "explanation": KNOWN_DISAGREEMENTS.get(key, "UNEXPLAINED"),
        })
    for name, stats in sources.items():
        stats["agreement"] = stats["agree"] / stats["total"]
        stats["threshold"] = THRESHOLDS[name]
        stats["passes"] = stats["agreement"] >= THRESHOLDS[name]
    return {
        "sources": sources,
        "num_samples": len(samples),
        "num_pool_failures": result.num_failed,
        "wall_time_s": elapsed,
        "responses_per_second": len(samples) / elapsed,
        "num_workers": num_workers,
    }


def environment_info() -> dict:
    """Date, machine and the versions that decide the numbers."""
    versions = {}
    for package in ("math-verify", "latex2sympy2_extended", "sympy", "antlr4-python3-runtime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{platform.machine()}-{os.cpu_count()}cpu",
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],  # the machine is shared: context for timings
        "packages": versions,
    }


def markdown(report: dict) -> str:
    """Short human summary of a report."""
    env = report["environment"]
    lines = [
        f"# math_accuracy agreement with independent grades ({env['date']}, {env['machine']})",
        "",
        "Versions: python " + env["python"] + ", "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items()),
        "",
        "| file | responses | agree | agreement | threshold | pass |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, stats in report["sources"].items():
        lines.append(f"| {name} | {stats['total']} | {stats['agree']} | {100 * stats['agreement']:.3f}% | "
                     f"{100 * stats['threshold']:.1f}% | {'yes' if stats['passes'] else 'NO'} |")
    lines += ["", f"Scored through RewardPool ({report['num_workers']} workers): {report['num_samples']} "
              f"responses in {report['wall_time_s']:.1f} s = {report['responses_per_second']:.0f} "
              f"responses/s; pool failures (timeouts/crashes): {report['num_pool_failures']}. "
              f"Load average (1 min) at the start: {env['load_average_1min']:.1f} on {env['machine']} "
              "(a machine shared with other jobs: the rate is noisy, the agreement is not).", "",
              "## Disagreements", ""]
    for name, stats in report["sources"].items():
        for item in stats["disagreements"]:
            lines += [f"- {name} problem {item['problem_index']} response {item['response_index']}: "
                      f"gold `{item['gold']}`, grader {item['grader']}, r1core {item['r1core_score']} "
                      f"({item['r1core_reason'] or 'correct'}). {item['explanation']}"]
    if not any(stats["disagreements"] for stats in report["sources"].values()):
        lines.append("None.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=None, help="score about this many per file")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "perf" / "results")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    root = data_dir()
    samples = subset(load_math_cot(root), args.subset) + subset(load_gsm8k(root), args.subset)
    report = {"environment": environment_info(), **measure(samples, args.num_workers)}
    text = markdown(report)
    print(text)
    if not args.no_write:
        env = report["environment"]
        stem = f"reward_agreement_cpu_{env['date'][:10]}"  # <op>_<device>_<date>, as perf/harness.py
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1, ensure_ascii=True) + "\n")
        (args.out_dir / f"{stem}.md").write_text(text)
        print(f"wrote {args.out_dir / stem}.json and .md")
    return 0 if all(stats["passes"] for stats in report["sources"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
