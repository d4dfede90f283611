"""Trainer side of the weight sync: Hugging Face-named tensors in, bounded buckets out.

The policy yields one full Hugging Face-named tensor at a time (``WeightSource``); this
module packs them into a staging buffer of ``bucket_bytes`` and, each time the buffer is
full, hands the engine one *bucket*: a list of records (name, dtype, full shape, offset
in the buffer, and which elements of the tensor this piece holds) that point into the
buffer. A tensor larger than the remaining space is split into pieces (whole rows of
dim 0 when a row fits, flat element ranges otherwise) that travel in consecutive
buckets, so the staging buffer is exactly ``bucket_bytes`` whatever the model; the
engine reassembles a split tensor before its loader sees it (see ``weight_transfer.py``).

Multi-rank trainers (Megatron TP/PP/EP) use ``r1core.rollout.sync_policy_weights``
(``policy_sync.py``), which drives the same writer from one sending rank.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

#: Offsets inside the staging buffer are aligned so that every dtype view is legal and
#: copies run on whole cache lines.
BUFFER_ALIGNMENT = 64

#: Wire names of dtypes (vLLM's own weight-transfer backends use the same strings).
_DTYPE_BY_NAME: dict[str, torch.dtype] = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64,
                  torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool)
}


def dtype_from_name(name: str) -> torch.dtype:
    """Inverse of ``str(dtype).removeprefix("torch.")``; raises on an unknown name."""
    try:
        return _DTYPE_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unsupported dtype {name!r}; known: {sorted(_DTYPE_BY_NAME)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@runtime_checkable
class WeightSource(Protocol):
    """Anything that can stream its weights under Hugging Face names.

    ``iter_hf_weights`` yields FULL tensors (all TP/EP shards of that one parameter
    gathered), one parameter at a time, in a deterministic order. It must never
    materialise the whole model on one rank.
    """

    def iter_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]: ...


@dataclass
class ModuleWeightSource:
    """``WeightSource`` over a Hugging Face ``nn.Module`` (tests, benchmarks, single-GPU).

    Yields the module's tensors under their checkpoint names (what ``save_pretrained`` writes
    and vLLM loads, see :func:`checkpoint_tensors`). With ``skip_tied=True`` the duplicate
    ``lm_head.weight`` of a tied-embedding model is not sent (the engine ties it itself).
    """

    module: torch.nn.Module
    skip_tied: bool = True

    def iter_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        tied = self.skip_tied and bool(
            getattr(getattr(self.module, "config", None), "tie_word_embeddings", False)
        )
        for name, tensor in checkpoint_tensors(self.module).items():
            if tied and name == "lm_head.weight":
                continue
            yield name, tensor.detach()


def checkpoint_tensors(module: torch.nn.Module,
                       state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``state_dict`` (default: the module's) under checkpoint names.

    transformers >= 5 converts some checkpoint tensors when it loads a model (MoE experts
    fused into ``experts.gate_up_proj [E, 2I, H]``, Mixtral's ``block_sparse_moe`` renamed to
    ``mlp``) and reverts that when it saves; this applies its own reversal, so the names are
    the checkpoint's of every family. Older transformers keep checkpoint names in memory.
    """
    tensors = dict(module.state_dict() if state_dict is None else state_dict)
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return tensors
    return revert_weight_conversion(module, tensors)


@dataclass
class BucketRecord:
    """Where one tensor, or one piece of it, lies in the staging buffer.

    ``shape`` is the FULL tensor's shape; the record holds its flattened elements
    ``[start, start + numel)``. A tensor that travels whole has ``start == 0`` and
    ``numel == prod(shape)``.
    """

    name: str
    dtype: str
    shape: list[int]
    offset: int
    start: int = 0
    numel: int = -1

    def __post_init__(self) -> None:
        if self.numel < 0:
            self.numel = _numel(self.shape)


@dataclass
class Bucket:
    """Records of one bucket plus the buffer size the receiver must map."""

    records: list[BucketRecord] = field(default_factory=list)
    buffer_bytes: int = 0

    def to_update_info(self) -> dict[str, Any]:
        """The plain dict that travels through vLLM's ``update_weights`` RPC."""
        return {
            "names": [r.name for r in self.records],
            "dtype_names": [r.dtype for r in self.records],
            "shapes": [r.shape for r in self.records],
            "offsets": [r.offset for r in self.records],
            "starts": [r.start for r in self.records],
            "numels": [r.numel for r in self.records],
            "buffer_bytes": self.buffer_bytes,
        }


def _aligned(num_bytes: int) -> int:
    return (num_bytes + BUFFER_ALIGNMENT - 1) // BUFFER_ALIGNMENT * BUFFER_ALIGNMENT


def _numel(shape: list[int] | tuple[int, ...] | torch.Size) -> int:
    numel = 1
    for dim in shape:
        numel *= int(dim)
    return numel


#: Staging buffers of this process by path. An in-process engine worker looks its
#: buffer up here instead of mapping the file a second time (two mappings of one file
#: are two sets of page-table entries, and RSS counts the pages twice).
_LOCAL_BUFFERS: weakref.WeakValueDictionary[str, SharedMemoryBuffer] = weakref.WeakValueDictionary()


def local_buffer(path: str) -> torch.Tensor | None:
    """The uint8 tensor of this process's staging buffer at ``path``, or None."""
    buffer = _LOCAL_BUFFERS.get(path)
    return None if buffer is None else buffer.tensor


#: Staging files are named ``<prefix><pid of the trainer process>-<uuid hex>``.
STAGING_PREFIX = "r1core-weights-"


def remove_stale_buffers(directory: str = "/dev/shm") -> list[str]:
    """Unlink staging files left by trainer processes that no longer exist.

    A process killed with SIGKILL (an OOM kill, a cancelled SLURM job) never runs its
    finalizer, and ``/dev/shm`` is memory: each leaked file keeps a bucket of RAM until the
    machine reboots. Files of live processes (other trainers on the node) are left alone.
    Returns the removed paths.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(STAGING_PREFIX):
            continue
        pid_text = name[len(STAGING_PREFIX):].partition("-")[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        path = os.path.join(directory, name)
        _unlink_quietly(path)
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


class SharedMemoryBuffer:
    """A ``/dev/shm`` file mapped as a uint8 tensor, shared with the engine's worker.

    The worker maps the same file once at its first bucket (an in-process worker uses
    this object's own mapping, see ``local_buffer``) and re-maps only if the trainer
    grows it. The file is unlinked when this object is closed or garbage-collected; a
    worker mapping outlives the unlink, as POSIX shared memory does.
    """

    def __init__(self, num_bytes: int, directory: str = "/dev/shm") -> None:
        if not os.path.isdir(directory):
            raise RuntimeError(f"shared-memory directory {directory!r} does not exist")
        remove_stale_buffers(directory)
        self.path = os.path.join(directory, f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex}")
        self.num_bytes = 0
        self.tensor = torch.empty(0, dtype=torch.uint8)
        # Create the file before the finalizer so cleanup never races creation.
        open(self.path, "wb").close()
        self._finalizer = weakref.finalize(self, _unlink_quietly, self.path)
        _LOCAL_BUFFERS[self.path] = self
        self.resize(num_bytes)

    def resize(self, num_bytes: int) -> None:
        """Grow (never shrink) the file to at least ``num_bytes`` and re-map it."""
        num_bytes = max(int(num_bytes), BUFFER_ALIGNMENT)
        if num_bytes <= self.num_bytes:
            return
        os.truncate(self.path, num_bytes)
        # shared=True maps MAP_SHARED: writes land in the page cache the worker reads.
        self.tensor = torch.from_file(self.path, shared=True, size=num_bytes, dtype=torch.uint8)
        self.num_bytes = num_bytes

    def close(self) -> None:
        self.tensor = torch.empty(0, dtype=torch.uint8)
        _LOCAL_BUFFERS.pop(self.path, None)
        self._finalizer()


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def view_in_buffer(
    buffer: torch.Tensor, offset: int, dtype: torch.dtype, shape: list[int] | tuple[int, ...]
) -> torch.Tensor:
    """A typed view of ``buffer[offset:]`` (uint8, 1-D) with ``shape``; no copy."""
    nbytes = _numel(shape) * torch.empty((), dtype=dtype).element_size()
    if offset + nbytes > buffer.numel():
        raise ValueError(
            f"record at offset {offset} with {nbytes} bytes overruns the {buffer.numel()}-byte buffer"
        )
    return buffer[offset : offset + nbytes].view(dtype).view(*shape)


#: ``fill(destination, start, numel)`` writes flattened elements ``[start, start+numel)``
#: of a tensor into ``destination`` (1-D, contiguous, in the staging buffer).
PieceFiller = Callable[[torch.Tensor, int, int], None]


def copy_filler(tensor: torch.Tensor) -> PieceFiller:
    """A ``PieceFiller`` that copies from a local tensor (any device, any strides).

    Pieces cut on row boundaries are copied row-wise, so a non-contiguous tensor is never
    made contiguous as a whole; only a tensor whose single row exceeds the bucket (and
    is not contiguous) is, once.
    """
    row = _numel(tensor.shape[1:]) if tensor.ndim > 1 else 1
    state: dict[str, torch.Tensor] = {}

    def fill(destination: torch.Tensor, start: int, numel: int) -> None:
        if tensor.is_contiguous() or tensor.ndim == 0:
            destination.copy_(tensor.reshape(-1)[start : start + numel])
        elif start % row == 0 and numel % row == 0:
            rows = tensor[start // row : (start + numel) // row]
            destination.view(rows.shape).copy_(rows)
        else:
            if "flat" not in state:
                state["flat"] = tensor.contiguous().reshape(-1)
            destination.copy_(state["flat"][start : start + numel])

    return fill


class BucketWriter:
    """Packs tensors into a ``SharedMemoryBuffer`` and ships each bucket when full.

    The buffer is ``bucket_bytes`` and never grows: a tensor that does not fit in what
    is left of the bucket is split into pieces (see ``BucketRecord``) that fill this
    bucket and the next ones. ``ship`` must return only once the receiver is done with
    the buffer, because the next bucket reuses it from offset 0. ``flush`` ships the
    last, partial bucket.
    """

    def __init__(
        self, buffer: SharedMemoryBuffer, bucket_bytes: int, ship: Callable[[Bucket], None]
    ) -> None:
        if bucket_bytes < BUFFER_ALIGNMENT:
            raise ValueError(
                f"bucket_bytes must be at least {BUFFER_ALIGNMENT} (one aligned slot), "
                f"got {bucket_bytes}"
            )
        buffer.resize(bucket_bytes)
        self.buffer = buffer
        self.bucket_bytes = bucket_bytes
        self.ship = ship
        self.num_buckets = 0
        self.num_tensors = 0
        self.num_pieces = 0
        self.num_bytes = 0
        self._records: list[BucketRecord] = []
        self._used = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Stage ``tensor`` (any dtype/device/shape/strides) under ``name``; it is copied
        before this returns, so the caller may free it."""
        self.add_pieces(name, tensor.dtype, tuple(tensor.shape), copy_filler(tensor.detach()))

    def add_pieces(
        self, name: str, dtype: torch.dtype, shape: tuple[int, ...], fill: PieceFiller
    ) -> None:
        """Stage a tensor of ``dtype``/``shape`` whose elements ``fill`` writes, piece by
        piece, straight into the staging buffer (e.g. a point-to-point receive), so the
        caller never needs the whole tensor in memory."""
        element = torch.empty((), dtype=dtype).element_size()
        total = _numel(shape)
        nbytes = total * element
        if self.bucket_bytes - self._used < nbytes <= self.bucket_bytes:
            # Fits in an empty bucket: start one rather than split the tensor.
            self.flush()
        # Pieces are whole rows of dim 0 when a row fits in a bucket (a row block keeps
        # row-wise copies of strided tensors cheap); flat element ranges otherwise.
        row = _numel(shape[1:]) if len(shape) > 1 else 1
        unit = row if row * element <= self.bucket_bytes else 1
        start = 0
        while True:
            numel = min(total - start, (self.bucket_bytes - self._used) // element // unit * unit)
            if numel <= 0 < total - start or self._used >= self.bucket_bytes:
                self.flush()  # not even one unit left in this bucket
                continue
            destination = self.buffer.tensor[self._used : self._used + numel * element]
            fill(destination.view(dtype), start, numel)
            self._records.append(
                BucketRecord(name, dtype_name(dtype), list(shape), self._used, start, numel)
            )
            self._used = min(_aligned(self._used + numel * element), self.bucket_bytes)
            self.num_pieces += 1
            start += numel
            if start >= total:
                break
        self.num_tensors += 1
        self.num_bytes += total * element

    def flush(self) -> None:
        if not self._records:
            return
        bucket = Bucket(self._records, self.buffer.num_bytes)
        self._records, self._used = [], 0
        self.ship(bucket)
        self.num_buckets += 1
