"""Trainer side of the weight sync: Hugging Face-named tensors in, bounded buckets out.

The policy yields one full Hugging Face-named tensor at a time (``WeightSource``); this
module packs them into a staging buffer of bounded size and, each time the buffer is
full, hands the engine one *bucket*: a list of (name, dtype, shape, offset) records that
point into the buffer. Nothing ever holds the whole model: the trainer holds one
parameter (the source's gather) plus one bucket, the engine one bucket plus the
few layers whose shards straddle two buckets.

Multi-rank trainers (Megatron TP/PP/EP, documented here because the engine only ever
sees one sender per model part):

* Every rank of a TP/EP group iterates ``iter_hf_weights()`` in the same order, because
  gathering a parameter's shards is a collective. Only the group's leader (TP rank 0, EP
  rank 0, DP rank 0) receives the full tensor and calls ``sync_weights``; the others
  iterate the source for its collectives and drop the results.
* With pipeline parallelism each stage holds its own layers, and each stage's leader
  streams its own layers, one parameter at a time (Hugging Face names carry global
  layer indices, so the engine needs no stage map). The engine connection and the
  staging buffer belong to one sender, the global rank 0: the other stage leaders send
  their parameters to it point-to-point over the trainer's process group, stage after
  stage, inside one ``start_weight_update``/``finish_weight_update`` pair, so rank 0
  holds at most one parameter plus one bucket and the coverage check at ``finish``
  sees the whole model. (With CUDA IPC each stage leader on the engine's node could
  instead hand over its own handles; that path is not built yet.)
* All other ranks wait at a barrier until the sync returns, then the next rollout starts.
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

    Yields ``state_dict()`` items one by one. With ``skip_tied=True`` the duplicate
    ``lm_head.weight`` of a tied-embedding model is not sent (the engine ties it itself).
    """

    module: torch.nn.Module
    skip_tied: bool = True

    def iter_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        tied = self.skip_tied and bool(
            getattr(getattr(self.module, "config", None), "tie_word_embeddings", False)
        )
        for name, tensor in self.module.state_dict().items():
            if tied and name == "lm_head.weight":
                continue
            yield from _checkpoint_names(name, tensor.detach())


def _checkpoint_names(name: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """Undo transformers 5's in-memory fusion of MoE experts into checkpoint names.

    transformers >= 5 keeps experts as ``mlp.experts.gate_up_proj`` ``[E, 2*I, H]`` and
    ``mlp.experts.down_proj`` ``[E, H, I]``; checkpoints (what ``save_pretrained``
    writes, what the policy's ``iter_hf_weights`` yields, what vLLM loads) name each
    expert's ``gate_proj``/``up_proj``/``down_proj.weight``. Other names pass through.
    """
    prefix, _, leaf = name.rpartition(".")
    if prefix.endswith(".experts") and leaf in ("gate_up_proj", "down_proj") and tensor.ndim == 3:
        for expert in range(tensor.shape[0]):
            if leaf == "gate_up_proj":
                gate, up = tensor[expert].chunk(2, dim=0)
                yield f"{prefix}.{expert}.gate_proj.weight", gate
                yield f"{prefix}.{expert}.up_proj.weight", up
            else:
                yield f"{prefix}.{expert}.down_proj.weight", tensor[expert]
        return
    yield name, tensor


@dataclass
class BucketRecord:
    """Where one tensor lies in the staging buffer."""

    name: str
    dtype: str
    shape: list[int]
    offset: int


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
            "buffer_bytes": self.buffer_bytes,
        }


def _aligned(num_bytes: int) -> int:
    return (num_bytes + BUFFER_ALIGNMENT - 1) // BUFFER_ALIGNMENT * BUFFER_ALIGNMENT


def tensor_nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class SharedMemoryBuffer:
    """A ``/dev/shm`` file mapped as a uint8 tensor, shared with the engine's worker.

    The worker maps the same file once at ``init_weight_transfer_engine`` and re-maps
    only when the trainer grows it (a tensor bigger than the bucket). The file is
    unlinked when this object is closed or garbage-collected; a worker mapping outlives
    the unlink, as POSIX shared memory does.
    """

    def __init__(self, num_bytes: int, directory: str = "/dev/shm") -> None:
        if not os.path.isdir(directory):
            raise RuntimeError(f"shared-memory directory {directory!r} does not exist")
        self.path = os.path.join(directory, f"r1core-weights-{os.getpid()}-{uuid.uuid4().hex}")
        self.num_bytes = 0
        self.tensor = torch.empty(0, dtype=torch.uint8)
        # Create the file before the finalizer so cleanup never races creation.
        open(self.path, "wb").close()
        self._finalizer = weakref.finalize(self, _unlink_quietly, self.path)
        self.resize(num_bytes)

    def resize(self, num_bytes: int) -> None:
        """Grow (never shrink) the file and re-map it."""
        num_bytes = _aligned(max(num_bytes, BUFFER_ALIGNMENT))
        if num_bytes <= self.num_bytes:
            return
        os.truncate(self.path, num_bytes)
        # shared=True maps MAP_SHARED: writes land in the page cache the worker reads.
        self.tensor = torch.from_file(self.path, shared=True, size=num_bytes, dtype=torch.uint8)
        self.num_bytes = num_bytes

    def close(self) -> None:
        self.tensor = torch.empty(0, dtype=torch.uint8)
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
    numel = 1
    for dim in shape:
        numel *= int(dim)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if offset + nbytes > buffer.numel():
        raise ValueError(
            f"record at offset {offset} with {nbytes} bytes overruns the {buffer.numel()}-byte buffer"
        )
    return buffer[offset : offset + nbytes].view(dtype).view(*shape)


class BucketWriter:
    """Packs tensors into a ``SharedMemoryBuffer`` and ships each bucket when full.

    ``add`` copies a tensor into the buffer at once (so the caller may free it). When the
    tensor does not fit, the current bucket is handed to ``ship`` first, which must
    return only once the receiver is done with the buffer, because the next bucket reuses
    it from offset 0. ``flush`` ships the last, partial bucket.
    """

    def __init__(
        self, buffer: SharedMemoryBuffer, bucket_bytes: int, ship: Callable[[Bucket], None]
    ) -> None:
        if bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
        buffer.resize(bucket_bytes)
        self.buffer = buffer
        self.bucket_bytes = bucket_bytes
        self.ship = ship
        self.num_buckets = 0
        self.num_tensors = 0
        self.num_bytes = 0
        self._records: list[BucketRecord] = []
        self._used = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Stage ``tensor`` (any dtype/device, any shape) under ``name``."""
        nbytes = tensor_nbytes(tensor)
        size = _aligned(nbytes)
        if self._records and self._used + size > self.bucket_bytes:
            self.flush()
        if size > self.buffer.num_bytes:
            # Alone in its bucket; the staging bound becomes the largest tensor.
            self.buffer.resize(size)
        view_in_buffer(self.buffer.tensor, self._used, tensor.dtype, tensor.shape).copy_(tensor)
        self._records.append(
            BucketRecord(name, dtype_name(tensor.dtype), list(tensor.shape), self._used)
        )
        self._used += size
        self.num_tensors += 1
        self.num_bytes += nbytes

    def flush(self) -> None:
        if not self._records:
            return
        bucket = Bucket(self._records, self.buffer.num_bytes)
        self._records, self._used = [], 0
        self.ship(bucket)
        self.num_buckets += 1
