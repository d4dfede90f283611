"""The record of a finished ``r1core train`` run for ``docs/``: its ``summary.json``, the
held-out evaluations before, during and after RL (avg@k, pass@k, maj@k, answer-format rate,
response length), the per-step training reward and timings, and a copy of its curves::

    python -m perf.run_summary runs/smollm2-arithmetic-grpo docs/smollm2_arithmetic_grpo

writes ``docs/smollm2_arithmetic_grpo_summary.json`` and ``docs/smollm2_arithmetic_grpo_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

EVAL_KEYS_DROPPED = ("phase",)
TRAIN_KEYS = ("step", "reward_mean", "reward/math_accuracy", "response_length_mean", "train_tokens", "step_s",
              "generate_s", "update_s", "sync_s", "grad_norm", "lr")


def run_record(run_dir: Path) -> dict[str, Any]:
    """``summary.json`` of ``run_dir`` with its evaluations and training steps from
    ``metrics.jsonl``; the first and last evaluation are compared key by key."""
    summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.jsonl"
    for path in (summary_path, metrics_path):
        if not path.is_file():
            raise SystemExit(f"{path} not found: is {run_dir} a finished r1core train run?")
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    evals = [{k: v for k, v in r.items() if k not in EVAL_KEYS_DROPPED} for r in rows if r.get("phase") == "eval"]
    train = [{k: r[k] for k in TRAIN_KEYS if k in r} for r in rows if r.get("phase") == "train"]
    if len(evals) < 2:
        raise SystemExit(f"{metrics_path} holds {len(evals)} held-out evaluations; before and after need two")
    first, last = evals[0], evals[-1]
    change = {k: {"before": first[k], "after": last[k], "change": last[k] - first[k]}
              for k in first if k != "step" and isinstance(first[k], (int, float)) and k in last}
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else None
    return {"summary": json.loads(summary_path.read_text()), "held_out_before_after": change,
            "evaluations": evals, "train_steps": train, "config_yaml": config}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("prefix", type=Path, help="output path prefix: <prefix>_summary.json, <prefix>_curves.png")
    args = parser.parse_args(argv)
    record = run_record(args.run_dir)
    args.prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.prefix}_summary.json").write_text(json.dumps(record, indent=2) + "\n")
    if (args.run_dir / "curves.png").is_file():
        shutil.copyfile(args.run_dir / "curves.png", f"{args.prefix}_curves.png")
    print(json.dumps(record["held_out_before_after"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
