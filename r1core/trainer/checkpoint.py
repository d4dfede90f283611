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

Without an initialised ``torch.distributed`` process group the barriers are no-ops and the
process is rank 0 of 1. The directory must be on a file system every rank sees.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
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
FORMAT_VERSION = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit this run (saved by a different number of ranks)."""


@dataclass
class CheckpointConfig:
    """Where and how often the trainer checkpoints."""

    directory: str = ""
    """Folder holding the step directories, on storage every rank sees ("": the run
    directory's ``checkpoints/``)."""
    interval: int = 100
    """Save every this many optimizer steps (0: only at the end)."""
    keep_last: int = 3
    """Committed checkpoints kept; older ones are deleted after each save (0: keep all)."""
    resume: bool = False
    """Continue from the newest committed checkpoint in ``directory`` if there is one."""


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
        try:
            with open(partial, "wb") as handle:
                torch.save(payload, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, shard)
            failure = None
        except Exception as error:  # reported to every rank below, then re-raised
            failure = f"rank {self.rank}: {type(error).__name__}: {error}"
        # Every rank learns whether every shard was written, so one rank's full disk fails
        # the save everywhere instead of leaving the others waiting in a barrier.
        failures = [item for item in self._gather(failure) if item is not None]
        if failures:
            if self.rank == 0:
                shutil.rmtree(temporary, ignore_errors=True)
            raise RuntimeError(f"checkpoint step {step} not saved: " + "; ".join(failures))

        failure = None
        if self.rank == 0:
            try:
                self._commit(step, temporary, final, config_yaml)
            except Exception as error:
                failure = f"rank 0 commit: {type(error).__name__}: {error}"
                if not self.distributed:
                    raise
        commit_failure = self._gather(failure)[0]
        if commit_failure is not None:
            raise RuntimeError(f"checkpoint step {step} not committed: {commit_failure}")
        return final

    def _gather(self, item: Optional[str]) -> list[Optional[str]]:
        """Every rank's ``item``, on every rank (a collective: it also acts as a barrier)."""
        if not self.distributed:
            return [item]
        gathered: list[Optional[str]] = [None] * self.world_size
        dist.all_gather_object(gathered, item, group=self.group)
        return gathered

    def _commit(self, step: int, temporary: Path, final: Path, config_yaml: str | None) -> None:
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
    def load(self, step: int, map_location: Any = "cpu") -> Checkpoint:
        """Load this rank's state of the committed checkpoint ``step``.

        Raises:
            FileNotFoundError: no committed checkpoint for ``step``.
            CheckpointMismatchError: it was saved by a different number of ranks.
        """
        path = self.directory / step_dirname(step)
        meta_path = path / META
        if not meta_path.is_file():
            raise FileNotFoundError(f"no committed checkpoint at {str(path)!r} (meta.json missing)")
        meta = json.loads(meta_path.read_text())
        if meta["world_size"] != self.world_size:
            raise CheckpointMismatchError(
                f"checkpoint {str(path)!r} was saved by {meta['world_size']} ranks; this run has "
                f"{self.world_size}"
            )
        state = torch.load(path / rank_filename(self.rank), map_location=map_location, weights_only=True)
        state.pop("step", None)
        config_path = path / "config.yaml"
        config_yaml = config_path.read_text() if config_path.is_file() else None
        return Checkpoint(step=meta["step"], path=path, state=state, meta=meta, config_yaml=config_yaml)

    def load_latest(self, map_location: Any = "cpu") -> Optional[Checkpoint]:
        """Load the newest committed checkpoint, or return None when there is none."""
        step = self.latest_step()
        return None if step is None else self.load(step, map_location=map_location)
