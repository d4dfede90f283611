"""Atomic, resumable checkpoints for single-process and multi-rank runs.

Layout of a checkpoint directory::

    <directory>/
        step_000120/            committed: renamed into place only once complete
            rank_00000.pt       one file per rank: its model/optimizer shard, RNG, data position
            rank_00001.pt
            meta.json           step, world size, file list; written last, inside the temp dir
            config.yaml         the run's configuration (when given)
        step_000150/
        latest                  text file naming the newest committed step directory
        .tmp_step_000180/       a save in progress (or killed): never read, removed on start

The commit protocol, in order: rank 0 creates ``.tmp_step_N``; barrier; every rank writes
its ``rank_R.pt`` (to a ``.partial`` name, fsync, rename); all ranks exchange their status;
rank 0 writes ``meta.json`` and ``config.yaml``, fsyncs the temp directory, renames it to
``step_N`` (the commit point, atomic on POSIX file systems), fsyncs the parent, replaces
``latest`` through a temporary file and ``os.replace``, and deletes checkpoints beyond
``keep_last``; all ranks learn the commit's outcome. The status exchanges are collectives,
so an error on one rank fails the save on every rank instead of leaving the others waiting
in a barrier. A process killed anywhere before the rename leaves only a ``.tmp_*``
directory; one killed after it leaves a complete checkpoint. Either way every earlier
checkpoint is untouched, and the next :class:`CheckpointManager` cleans the leftovers.

Loading picks the newest committed ``step_*`` directory that holds ``meta.json`` (so a
stale ``latest`` pointer, e.g. from a kill between the rename and the pointer update, can
never hide a complete checkpoint) and reads this rank's file with ``weights_only=True``.
``meta.json`` records every rank file's size and SHA-256 (hashed while it is written), so
:meth:`CheckpointManager.newest_intact_step` can pass over a checkpoint damaged after its
commit (a truncated copy, a disk error) and name it, instead of failing in ``torch.load``.

Without an initialised ``torch.distributed`` process group the barriers are no-ops and the
process is rank 0 of 1. The directory must be on a file system every rank sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist

from r1core.trainer.rng import capture_rng_state

STEP_PATTERN = re.compile(r"^step_(\d{6,})$")
TEMP_PREFIX = ".tmp_"
TRASH_PREFIX = ".trash_"
LATEST = "latest"
META = "meta.json"
FORMAT_VERSION = 2  # 2: meta.json records each rank file's size and SHA-256


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit this run (saved by a different number of ranks)."""


class CheckpointDamagedError(RuntimeError):
    """A committed checkpoint's files are unreadable or differ from what was saved."""


class _HashingWriter:
    """A binary file wrapper that counts and hashes what ``torch.save`` writes through it, so
    the checksum costs no second read of the shard."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


#: Signals ``checkpoint.stop_signals`` may name: those a scheduler or a user sends to ask a
#: job to stop (SIGKILL and SIGSTOP cannot be caught).
STOP_SIGNAL_NAMES = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGINT")


@dataclass
class CheckpointConfig:
    """Where and how often the trainer checkpoints, how a run resumes, and how it stops."""

    directory: str = ""
    """Folder holding the step directories, on storage every rank sees ("": the run
    directory's ``checkpoints/``)."""
    interval: int = 100
    """Save every this many optimizer steps (0: only at the end)."""
    keep_last: int = 3
    """Committed checkpoints kept; older ones are deleted after each save (0: keep all)."""
    resume: bool = False
    """Continue from the newest intact checkpoint in ``directory``. A run folder without one
    is refused (see ``start_if_none``); a damaged newest checkpoint is reported and the newest
    intact one is used; changed model, data or algorithm keys are refused by name."""
    start_if_none: bool = False
    """With ``resume``: start from the beginning when the folder holds no checkpoint yet, so
    the same command serves the first attempt and every requeue (``--resume-or-start``)."""
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    """Signals that stop the run gracefully: it finishes the step in progress, saves a
    checkpoint and exits with status 75 (SLURM sends SIGTERM at preemption and at the time
    limit; ``#SBATCH --signal=USR1@300`` asks for SIGUSR1 five minutes before it)."""
    stop_timeout_s: float = 300.0
    """Longest time from a stop signal to the exit: past it the run exits at once, without
    a new checkpoint, with status 128 + the signal's number."""

    def __post_init__(self) -> None:
        if self.interval < 0:
            raise ValueError(f"checkpoint.interval must be >= 0 (0: only at the end), got {self.interval}")
        if self.keep_last < 0:
            raise ValueError(f"checkpoint.keep_last must be >= 0 (0: keep all), got {self.keep_last}")
        if self.start_if_none and not self.resume:
            raise ValueError("checkpoint.start_if_none=true needs checkpoint.resume=true (or use --resume-or-start)")
        for name in self.stop_signals:
            if name not in STOP_SIGNAL_NAMES:
                raise ValueError(f"checkpoint.stop_signals: {name!r} is not one of {', '.join(STOP_SIGNAL_NAMES)}")
        if not self.stop_timeout_s > 0:
            raise ValueError(f"checkpoint.stop_timeout_s must be > 0, got {self.stop_timeout_s}")


@dataclass
class Checkpoint:
    """One loaded checkpoint: this rank's state and the run-wide metadata."""

    step: int
    path: Path
    state: dict[str, Any]
    """What was passed to ``save`` on this rank, plus ``"rng"`` when it was captured."""
    meta: dict[str, Any]
    config_yaml: Optional[str]


def _fsync_directory(path: Path) -> None:
    # A rename is durable only once the directory holding the new entry is on disk.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_durable(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def step_dirname(step: int) -> str:
    return f"step_{step:06d}"


def rank_filename(rank: int) -> str:
    return f"rank_{rank:05d}.pt"


class CheckpointManager:
    """Save and load checkpoints in ``directory``; see the module docstring for the protocol.

    Args:
        directory: the checkpoint folder (created if missing).
        keep_last: committed checkpoints to keep after each save; 0 keeps all.
        group: process group for the barriers (default: the world, if initialised).
    """

    def __init__(self, directory: str | os.PathLike[str], keep_last: int = 3, group: Any = None) -> None:
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.group = group
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank(group) if self.distributed else 0
        self.world_size = dist.get_world_size(group) if self.distributed else 1
        if self.rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers()
        self._barrier()

    # -- helpers ---------------------------------------------------------------------------
    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.group)

    def _remove_leftovers(self) -> None:
        """Delete temp dirs of killed saves, half-deleted old checkpoints and stray pointers."""
        for entry in self.directory.iterdir():
            if not entry.name.startswith((TEMP_PREFIX, TRASH_PREFIX)):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        (self.directory / f"{LATEST}.partial").unlink(missing_ok=True)

    def committed_steps(self) -> list[int]:
        """Steps of complete checkpoints (their directory holds meta.json), ascending."""
        steps = []
        if not self.directory.is_dir():
            return steps
        for entry in self.directory.iterdir():
            match = STEP_PATTERN.match(entry.name)
            if match and (entry / META).is_file():
                steps.append(int(match.group(1)))
        return sorted(steps)

    def latest_step(self) -> Optional[int]:
        steps = self.committed_steps()
        return steps[-1] if steps else None

    # -- save ------------------------------------------------------------------------------
    def save(
        self,
        step: int,
        state: dict[str, Any],
        config_yaml: str | None = None,
        capture_rng: bool = True,
    ) -> Path:
        """Write this rank's ``state`` for ``step``; collective: every rank must call it.

        Args:
            step: the number of optimizer steps taken so far (the resumed run starts here).
            state: this rank's picklable state: typically ``{"model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "data": loader.state_dict()}``.
                Tensors are saved as they are (move them to CPU first to free the device
                sooner; torch.load maps them back to CPU).
            config_yaml: the run's configuration as YAML text (``r1core.config.dump_config``),
                stored as ``config.yaml`` by rank 0.
            capture_rng: also store every global RNG state under ``state["rng"]``.

        Returns:
            The committed step directory.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if "rng" in state and capture_rng:
            raise ValueError("state already has an 'rng' entry; pass capture_rng=False to keep it")
        name = step_dirname(step)
        temporary = self.directory / f"{TEMP_PREFIX}{name}"
        final = self.directory / name
        if self.rank == 0:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
        self._barrier()

        payload = dict(state)
        if capture_rng:
            payload["rng"] = capture_rng_state()
        payload["step"] = step
        shard = temporary / rank_filename(self.rank)
        partial = shard.with_name(shard.name + ".partial")
        record: Any = None
        try:
            with open(partial, "wb") as handle:
                hashed = _HashingWriter(handle)
                torch.save(payload, hashed)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, shard)
            record = {"bytes": hashed.size, "sha256": hashed.digest.hexdigest()}
        except Exception as error:  # reported to every rank below, then re-raised
            record = f"rank {self.rank}: {type(error).__name__}: {error}"
        # Every rank learns whether every shard was written, so one rank's full disk fails
        # the save everywhere instead of leaving the others waiting in a barrier.
        records = self._gather(record)
        failures = [item for item in records if isinstance(item, str)]
        if failures:
            if self.rank == 0:
                shutil.rmtree(temporary, ignore_errors=True)
            raise RuntimeError(f"checkpoint step {step} not saved: " + "; ".join(failures))

        failure = None
        if self.rank == 0:
            try:
                self._commit(step, temporary, final, config_yaml, records)
            except Exception as error:
                failure = f"rank 0 commit: {type(error).__name__}: {error}"
                if not self.distributed:
                    raise
        commit_failure = self._gather(failure)[0]
        if commit_failure is not None:
            raise RuntimeError(f"checkpoint step {step} not committed: {commit_failure}")
        return final

    def _gather(self, item: Any) -> list[Any]:
        """Every rank's ``item``, on every rank (a collective: it also acts as a barrier)."""
        if not self.distributed:
            return [item]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, item, group=self.group)
        return gathered

    def _commit(self, step: int, temporary: Path, final: Path, config_yaml: str | None,
                records: list[dict[str, Any]]) -> None:
        files = sorted(entry.name for entry in temporary.iterdir())
        expected = [rank_filename(rank) for rank in range(self.world_size)]
        missing = sorted(set(expected) - set(files))
        if missing:
            raise RuntimeError(f"checkpoint step {step}: rank files missing after the barrier: {missing}")
        if config_yaml is not None:
            _write_durable(temporary / "config.yaml", config_yaml.encode())
        meta = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "world_size": self.world_size,
            "files": expected,
            "checksums": {name: record for name, record in zip(expected, records)},
            "saved_at_unix": time.time(),
        }
        # meta.json marks the directory complete; written after every rank file.
        _write_durable(temporary / META, json.dumps(meta, indent=2).encode())
        _fsync_directory(temporary)
        if final.exists():  # re-saving a step (e.g. after resuming from it): replace it whole
            trash = self.directory / f"{TRASH_PREFIX}{final.name}"
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(final, trash)
            os.rename(temporary, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(temporary, final)  # the commit point
        _fsync_directory(self.directory)
        _write_durable(self.directory / LATEST, (final.name + "\n").encode())
        _fsync_directory(self.directory)
        self._rotate(keep=final.name)

    def _rotate(self, keep: str) -> None:
        if not self.keep_last:
            return
        steps = self.committed_steps()
        for old in steps[: max(len(steps) - self.keep_last, 0)]:
            path = self.directory / step_dirname(old)
            if path.name == keep:
                continue
            # Rename first so a kill mid-delete never leaves a step dir with meta.json but
            # missing rank files.
            trash = self.directory / f"{TRASH_PREFIX}{path.name}"
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)

    # -- load ------------------------------------------------------------------------------
    def _meta(self, step: int) -> dict[str, Any]:
        path = self.directory / step_dirname(step)
        meta_path = path / META
        if not meta_path.is_file():
            raise FileNotFoundError(f"no committed checkpoint at {str(path)!r} (meta.json missing)")
        try:
            meta = json.loads(meta_path.read_text())
            world_size = int(meta["world_size"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise CheckpointDamagedError(f"{meta_path}: unreadable ({error})") from None
        if world_size != self.world_size:
            raise CheckpointMismatchError(
                f"checkpoint {str(path)!r} was saved by {world_size} ranks; this run has "
                f"{self.world_size}"
            )
        return meta

    def damage(self, step: int) -> Optional[str]:
        """Why this rank's part of checkpoint ``step`` cannot be loaded, or None when it is
        intact: an unreadable ``meta.json``, a missing rank file, or one whose size or SHA-256
        differs from what the save recorded (checkpoints written before checksums were
        recorded are checked for presence only). Reads this rank's file once.

        Raises:
            CheckpointMismatchError: it was saved by a different number of ranks (not damage:
                the run does not fit it).
        """
        try:
            meta = self._meta(step)
        except CheckpointDamagedError as error:
            return str(error)
        name = rank_filename(self.rank)
        shard = self.directory / step_dirname(step) / name
        if not shard.is_file():
            return f"{shard} is missing"
        expected = meta.get("checksums", {}).get(name)
        if expected is None:
            return None
        size = shard.stat().st_size
        if size != expected["bytes"]:
            return f"{shard} holds {size} bytes, {expected['bytes']} were saved"
        digest = hashlib.sha256()
        with open(shard, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        if digest.hexdigest() != expected["sha256"]:
            return f"{shard} does not match its SHA-256 recorded at save time"
        return None

    def newest_intact_step(self) -> tuple[Optional[int], list[tuple[int, str]]]:
        """The newest committed step whose files are intact on every rank, and the newer
        damaged ones with the reasons (newest first). Collective: every rank must call it.

        Raises:
            CheckpointMismatchError: a checkpoint was saved by a different number of ranks.
        """
        damaged: list[tuple[int, str]] = []
        for step in reversed(self.committed_steps()):
            reasons = [reason for reason in self._gather(self.damage(step)) if reason is not None]
            if not reasons:
                return step, damaged
            damaged.append((step, "; ".join(reasons)))
        return None, damaged

    def load(self, step: int, map_location: Any = "cpu") -> Checkpoint:
        """Load this rank's state of the committed checkpoint ``step``.

        Raises:
            FileNotFoundError: no committed checkpoint for ``step``.
            CheckpointMismatchError: it was saved by a different number of ranks.
            CheckpointDamagedError: its meta.json or this rank's file does not load.
        """
        path = self.directory / step_dirname(step)
        meta = self._meta(step)
        try:
            state = torch.load(path / rank_filename(self.rank), map_location=map_location, weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
            raise CheckpointDamagedError(f"{path / rank_filename(self.rank)} does not load ({error})") from None
        state.pop("step", None)
        config_path = path / "config.yaml"
        config_yaml = config_path.read_text() if config_path.is_file() else None
        return Checkpoint(step=meta["step"], path=path, state=state, meta=meta, config_yaml=config_yaml)

    def load_config_yaml(self, step: int) -> Optional[str]:
        """The run configuration saved with checkpoint ``step`` (None if it has none)."""
        path = self.directory / step_dirname(step) / "config.yaml"
        return path.read_text() if path.is_file() else None

    def load_latest(self, map_location: Any = "cpu") -> Optional[Checkpoint]:
        """Load the newest committed checkpoint, or return None when there is none."""
        step = self.latest_step()
        return None if step is None else self.load(step, map_location=map_location)
