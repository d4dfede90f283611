"""Per-run metrics: a JSONL log, TensorBoard event files, a PNG of the curves, the summary.

Everything a run writes lands in its run directory (``runs/<run name>/``). Values are
plain floats: the trainer converts its tensor metrics once per step, at the one host
synchronisation logging needs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence


@dataclass
class LoggingConfig:
    """What the trainer reports besides ``metrics.jsonl`` (always written), and where (``logging``)."""

    tensorboard: bool = True
    """Write TensorBoard event files under ``<run dir>/tensorboard``."""
    rollouts: bool = False
    """``r1core train``: append every step's samples (group, prompt and response token ids,
    reward) to ``<run dir>/rollouts/rank_<global rank>.jsonl``, one file per data-parallel
    replica (written by its leader): which replica trained on what, for debugging."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so readers never see
    a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RunLogger:
    """Appends metrics to ``metrics.jsonl`` and TensorBoard; plots and summarises on demand.

    Resuming a run re-opens the same files: records of the resumed phases logged after the
    checkpoint's step ``resume_from`` are dropped from ``metrics.jsonl`` (they belong to the
    interrupted attempt and are logged again), so no step appears twice.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tensorboard: bool = True,
        resume_from: int | None = None,
        resumed_phases: tuple[str, ...] = ("train", "eval"),
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.history: list[dict[str, Any]] = []
        if self.jsonl_path.exists():
            for line in self.jsonl_path.read_text().splitlines():
                record = json.loads(line)
                stale = resume_from is not None and record["phase"] in resumed_phases and record["step"] > resume_from
                if not stale:
                    self.history.append(record)
            atomic_write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in self.history))
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_from is None else resume_from + 1
            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)

    def log(self, step: int, metrics: Mapping[str, float], *, phase: str = "train") -> None:
        """Record ``metrics`` (name -> float) for ``step``; names are prefixed ``phase/``."""
        record = {"step": step, "phase": phase, **{k: float(v) for k, v in metrics.items()}}
        self.history.append(record)
        with open(self.jsonl_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for name, value in metrics.items():
                if math.isfinite(float(value)):
                    self._writer.add_scalar(f"{phase}/{name}", float(value), step)
            self._writer.flush()

    def series(self, name: str, phase: str | None = None) -> tuple[list[int], list[float]]:
        """Steps and values of one metric, in logging order."""
        rows = [r for r in self.history if name in r and (phase is None or r["phase"] == phase)]
        return [r["step"] for r in rows], [r[name] for r in rows]

    def plot(self, path: str | Path, panels: Sequence[tuple[str, str | None]]) -> Path:
        """Draw one panel per ``(metric, phase)`` into a PNG at ``path``; return the path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
        for axis, (name, phase) in zip(axes[0], panels):
            steps, values = self.series(name, phase)
            axis.plot(steps, values, marker="o" if len(steps) < 30 else None, linewidth=1.5)
            axis.set_title(f"{phase}/{name}" if phase else name)
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
        figure.tight_layout()
        path = Path(path)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write ``summary.json`` atomically; return its path."""
        path = self.run_dir / "summary.json"
        atomic_write_text(path, json.dumps(dict(summary), indent=2, sort_keys=True) + "\n")
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class NullLogger:
    """The logger of ranks other than global rank 0: same interface, writes nothing (one
    rank reports for the whole run, from metrics already reduced over the replicas)."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []

    def log(self, step: int, metrics: Mapping[str, float], *, phase: str = "train") -> None:
        pass

    def series(self, name: str, phase: str | None = None) -> tuple[list[int], list[float]]:
        return [], []

    def plot(self, path: str | Path, panels: Sequence[tuple[str, str | None]]) -> Path:
        return Path(path)

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        return Path("summary.json")

    def close(self) -> None:
        pass
