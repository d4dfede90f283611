"""The record of an ``r1core train`` run for ``docs/``: its ``summary.json`` (None for a run
stopped before the end), the held-out evaluations before, during and after RL (avg@k, pass@k,
maj@k, answer-format rate, response length), the per-step training reward and timings, and
its curves (the run's ``curves.png``, or for a stopped run the same panels drawn by the
trainer's own plotting from ``metrics.jsonl``)::

    python -m perf.run_summary runs/smollm2-arithmetic-grpo docs/smollm2_arithmetic_grpo

writes ``docs/smollm2_arithmetic_grpo_summary.json`` and ``docs/smollm2_arithmetic_grpo_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

EVAL_KEYS_DROPPED = ("phase",)
TRAIN_KEYS = ("step", "reward_mean", "reward/math_accuracy", "response_length_mean", "train_tokens", "step_s",
              "generate_s", "update_s", "sync_s", "grad_norm", "lr")


def run_record(run_dir: Path) -> dict[str, Any]:
    """``summary.json`` of ``run_dir`` with its evaluations and training steps from
    ``metrics.jsonl``; the first and last evaluation are compared key by key."""
    summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise SystemExit(f"{metrics_path} not found: is {run_dir} an r1core train run?")
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    evals = [{k: v for k, v in r.items() if k not in EVAL_KEYS_DROPPED} for r in rows if r.get("phase") == "eval"]
    train = [{k: r[k] for k in TRAIN_KEYS if k in r} for r in rows if r.get("phase") == "train"]
    if len(evals) < 2:
        raise SystemExit(f"{metrics_path} holds {len(evals)} held-out evaluations; before and after need two")
    first, last = evals[0], evals[-1]
    change = {k: {"before": first[k], "after": last[k], "change": last[k] - first[k]}
              for k in first if k != "step" and isinstance(first[k], (int, float)) and k in last}
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else None
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return {"summary": summary, "finished": summary is not None,
            "before_step": first["step"], "after_step": last["step"], "held_out_before_after": change,
            "evaluations": evals, "train_steps": train, "config_yaml": config}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("prefix", type=Path, help="output path prefix: <prefix>_summary.json, <prefix>_curves.png")
    args = parser.parse_args(argv)
    record = run_record(args.run_dir)
    args.prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.prefix}_summary.json").write_text(json.dumps(record, indent=2) + "\n")
    curves = Path(f"{args.prefix}_curves.png")
    if record["finished"] and (args.run_dir / "curves.png").is_file():
        shutil.copyfile(args.run_dir / "curves.png", curves)
    else:
        from r1core.commands.train import CURVE_PANELS
        from r1core.trainer.run_logger import RunLogger

        with tempfile.TemporaryDirectory() as scratch:  # RunLogger rewrites the log it opens
            shutil.copyfile(args.run_dir / "metrics.jsonl", Path(scratch) / "metrics.jsonl")
            RunLogger(scratch, tensorboard=False).plot(curves, CURVE_PANELS)
    print(json.dumps(record["held_out_before_after"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
