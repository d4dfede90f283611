"""Per-run metrics: a JSONL log, TensorBoard event files, a PNG of the curves, the summary.

Everything a run writes lands in its run directory (``runs/<run name>/``). Values are
plain floats: the trainer converts its tensor metrics once per step, at the one host
synchronisation logging needs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from r1core._extras import MissingExtraError


LOG_LEVELS = ("debug", "info", "warning", "error")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class WandbConfig:
    """An optional Weights & Biases run mirroring ``metrics.jsonl`` (``pip install wandb``)."""

    enabled: bool = False
    """Log every metric, the configuration and the summary to Weights & Biases too."""
    project: str = "r1core"
    """W&B project."""
    entity: str = ""
    """W&B entity (team or user; "": the account's default)."""
    name: str = ""
    """Run name shown in W&B ("": ``run.name``)."""
    mode: str = "online"
    """``online``, ``offline`` (written under ``<run dir>/wandb``, ``wandb sync`` later) or
    ``disabled``."""
    tags: list[str] = field(default_factory=list)
    """Tags of the W&B run."""

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ValueError(f"logging.wandb.mode must be one of {', '.join(WANDB_MODES)}, got {self.mode!r}")

    def validate(self) -> None:
        """An enabled logger needs the ``wandb`` package (checked before any work).

        Raises:
            r1core._extras.MissingExtraError: ``wandb`` is not installed.
        """
        if self.enabled and importlib.util.find_spec("wandb") is None:
            raise MissingExtraError("logging.wandb.enabled=true needs the 'wandb' package, which is not installed: "
                                    "pip install wandb (or leave logging.wandb.enabled=false)")


@dataclass
class LoggingConfig:
    """What a run reports and how loudly: files in the run folder (``metrics.jsonl`` is always
    written), the console, and an optional Weights & Biases run (``logging``)."""

    tensorboard: bool = True
    """Write TensorBoard event files under ``<run dir>/tensorboard``."""
    rollouts: bool = False
    """``r1core train``: append every step's samples (group, prompt and response token ids,
    reward) to ``<run dir>/rollouts/rank_<global rank>.jsonl``, one file per data-parallel
    replica (written by its leader): which replica trained on what, for debugging."""
    level: str = "info"
    """Level of r1core's own console messages: ``debug``, ``info``, ``warning`` or ``error``."""
    verbose: bool = False
    """Show the libraries' own messages (vLLM, Megatron-Core, transformers) at INFO, the
    known-harmless ones included; off: they show from WARNING up, those filtered (``-v``)."""
    progress: bool = True
    """One progress bar over the run's steps (cold-start SFT, RL, evaluations) on global rank 0."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases logging (off by default)."""

    def __post_init__(self) -> None:
        self.level = self.level.lower()
        if self.level not in LOG_LEVELS:
            raise ValueError(f"logging.level must be one of {', '.join(LOG_LEVELS)}, got {self.level!r}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so readers never see
    a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class CorruptRunLogError(ValueError):
    """A line of ``metrics.jsonl`` other than the last does not parse: the file was edited or
    damaged, not torn by an interrupted write."""


log = logging.getLogger("r1core")

# How often the current attempt's running time is written to attempts.json: a killed attempt
# loses at most this much of its time from the total.
ATTEMPT_FLUSH_SECONDS = 10.0


def read_metrics_log(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``. A last line cut short by an interrupted write is
    dropped with a warning (its step is logged again by the resumed run).

    Raises:
        CorruptRunLogError: another line does not parse; names the file and the line.
    """
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict) or "step" not in record or "phase" not in record:
                raise ValueError("not a metrics record")
        except (ValueError, UnicodeDecodeError) as error:
            if number == len(lines):  # no newline after it: the write was cut short
                log.warning("%s: dropped its last line, cut short by an interrupted write (%d bytes)", path, len(raw))
                continue
            raise CorruptRunLogError(f"{path}:{number}: not a metrics record ({error}); the log was edited or "
                                     "damaged: repair or remove that line to resume") from None
        records.append(record)
    return records


class RunLogger:
    """Appends metrics to ``metrics.jsonl``, TensorBoard and (optionally) Weights & Biases;
    plots and summarises on demand; adds up the run's wall time over its attempts.

    Resuming a run re-opens the same files: records of the resumed phases logged after the
    checkpoint's step ``resume_from`` are dropped from ``metrics.jsonl`` (they belong to the
    interrupted attempt and are logged again), so no step appears twice. ``restart`` drops
    every record (a run started again from the beginning in its own folder). A last line torn
    by a kill is dropped.

    Every attempt at the run (the first, and each resume or restart) is one entry of
    ``attempts.json`` with its running time, written every :data:`ATTEMPT_FLUSH_SECONDS` and
    when it ends (:meth:`end_attempt`, or :meth:`close`); :meth:`wall_seconds` is their sum.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tensorboard: bool = True,
        resume_from: int | None = None,
        resumed_phases: tuple[str, ...] = ("train", "eval"),
        restart: bool = False,
        wandb: WandbConfig | None = None,
        run_name: str = "",
        run_config: Mapping[str, Any] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.history: list[dict[str, Any]] = []
        if self.jsonl_path.exists():
            for record in read_metrics_log(self.jsonl_path):
                stale = restart or (
                    resume_from is not None and record["phase"] in resumed_phases and record["step"] > resume_from)
                if not stale:
                    self.history.append(record)
            atomic_write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in self.history))
        self._start_attempt(continued=resume_from is not None or restart)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = 0 if restart else None if resume_from is None else resume_from + 1
            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)
        self._wandb = None
        if wandb is not None and wandb.enabled:
            self._wandb = _start_wandb(wandb, self.run_dir, run_name, run_config, resumed=resume_from is not None)

    # ------------------------------------------------------------------ attempts

    def _start_attempt(self, continued: bool) -> None:
        self.attempts_path = self.run_dir / "attempts.json"
        self.attempts: list[dict[str, Any]] = []
        if continued and self.attempts_path.is_file():
            try:
                self.attempts = list(json.loads(self.attempts_path.read_text()))
            except ValueError:
                log.warning("%s is unreadable: the earlier attempts' time is not counted", self.attempts_path)
        self._started = time.monotonic()
        self._flushed = self._started
        self._ended = False
        self.attempts.append({"started_unix": time.time(), "seconds": 0.0})
        self._flush_attempts()

    def _flush_attempts(self, status: str | None = None) -> None:
        self._flushed = time.monotonic()
        self.attempts[-1]["seconds"] = self._flushed - self._started
        if status is not None:
            self.attempts[-1]["status"] = status
        atomic_write_text(self.attempts_path, json.dumps(self.attempts, indent=1) + "\n")

    def wall_seconds(self) -> float:
        """Running time of every attempt at this run so far, this one included (up to its
        end, once :meth:`end_attempt` has ended it)."""
        if self._ended:
            return sum(a["seconds"] for a in self.attempts)
        return sum(a["seconds"] for a in self.attempts[:-1]) + time.monotonic() - self._started

    def end_attempt(self, status: str = "finished") -> float:
        """End this attempt now: record its time and how it ended (``status``) in
        ``attempts.json``, and return :meth:`wall_seconds`. A summary written with that figure
        equals the sum of ``attempts.json``, however long the rest of :meth:`close` takes."""
        if not self._ended:
            self._flush_attempts(status)
            self._ended = True
        return self.wall_seconds()

    # ------------------------------------------------------------------ metrics

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
        if self._wandb is not None:
            self._wandb.log({f"{phase}/step": step, **{f"{phase}/{k}": float(v) for k, v in metrics.items()}})
        if not self._ended and time.monotonic() - self._flushed > ATTEMPT_FLUSH_SECONDS:
            self._flush_attempts()

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
        """Write ``summary.json`` atomically (a value that is not a finite number is written
        as ``null``: JSON has no NaN); return its path."""
        path = self.run_dir / "summary.json"
        clean = {key: finite_or_none(value) for key, value in summary.items()}
        atomic_write_text(path, json.dumps(clean, indent=2, sort_keys=True) + "\n")
        if self._wandb is not None:
            self._wandb.summary.update({k: v for k, v in clean.items() if v is not None})
        return path

    def close(self, status: str = "finished") -> None:
        """Close the writers; record this attempt's time and how it ended (``status``), unless
        :meth:`end_attempt` already has."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish(exit_code=0 if status == "finished" else 1)
            self._wandb = None
        self.end_attempt(status)


def finite_or_none(value: Any) -> Any:
    """``value``, or None for a float that is NaN or infinite."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _start_wandb(config: WandbConfig, run_dir: Path, run_name: str, run_config: Mapping[str, Any] | None,
                 resumed: bool) -> Any:
    """A W&B run for this run folder: the id is kept in ``<run dir>/wandb_id``, so a resumed
    attempt continues the same W&B run. Each phase's metrics are plotted against its own
    step (``sft/step``, ``train/step``, ``eval/step``): the phases count steps separately."""
    try:
        import wandb
    except ImportError as error:
        raise MissingExtraError(f"logging.wandb.enabled=true needs the 'wandb' package: pip install wandb ({error})") \
            from error
    id_path = run_dir / "wandb_id"
    run_id = id_path.read_text().strip() if resumed and id_path.is_file() else secrets.token_hex(6)
    atomic_write_text(id_path, run_id + "\n")
    run = wandb.init(project=config.project, entity=config.entity or None, name=config.name or run_name or None,
                     mode=config.mode, tags=list(config.tags) or None, dir=str(run_dir), id=run_id, resume="allow",
                     config=dict(run_config or {}))
    for phase in ("sft", "train", "eval"):
        run.define_metric(f"{phase}/step")
        run.define_metric(f"{phase}/*", step_metric=f"{phase}/step")
    log.info("Weights & Biases run %s (%s)", run_id, getattr(run, "url", None) or f"{config.mode}, {run_dir / 'wandb'}")
    return run


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

    def wall_seconds(self) -> float:
        return 0.0

    def end_attempt(self, status: str = "finished") -> float:
        return 0.0

    def close(self, status: str = "finished") -> None:
        pass
