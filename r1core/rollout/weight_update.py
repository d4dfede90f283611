"""One open weight update of a ``VLLMRollout``: tensors in, one at a time, then ``finish``.

``VLLMRollout.start_weight_update`` opens the engine side (vLLM's
``start_weight_update``) and returns a :class:`WeightUpdate`. The caller adds Hugging
Face-named tensors with :meth:`WeightUpdate.add` (a local tensor) or
:meth:`WeightUpdate.add_pieces` (a tensor that arrives piece by piece, e.g. from another
rank, written straight into the staging buffer) and closes with
:meth:`WeightUpdate.finish`, which returns :class:`SyncStats` or raises if the engine
was not fully covered. ``VLLMRollout.sync_weights`` and
``r1core.rollout.sync_policy_weights`` are both built on it.

The transport is a *sender* per backend:

* ``r1core_shm`` (CPU): a ``BucketWriter`` over one ``/dev/shm`` staging buffer of
  exactly ``bucket_bytes``; tensors larger than that travel in pieces.
* ``r1core_ipc`` (CUDA): a list of device tensors per bucket whose IPC handles travel
  (unproven here: no GPU in CI; mirrors vLLM's own unpacked IPC sender).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, Protocol

import torch

from r1core.rollout.bridge import BucketWriter, PieceFiller, SharedMemoryBuffer, dtype_name


@dataclass
class SyncStats:
    """What one weight update moved and how long it took (host wall time)."""

    weight_version: str
    num_tensors: int
    num_bytes: int
    num_buckets: int
    seconds: float
    staging_bytes: int = 0
    """Size of the trainer-side staging buffer (0 for CUDA IPC, which stages nothing)."""


class _Sender(Protocol):
    num_tensors: int
    num_bytes: int
    num_buckets: int

    def add(self, name: str, tensor: torch.Tensor) -> None: ...

    def add_pieces(self, name: str, dtype: torch.dtype, shape: tuple[int, ...],
                   fill: PieceFiller) -> None: ...

    def flush(self) -> None: ...


class _SharedMemorySender:
    """``r1core_shm``: a ``BucketWriter`` whose buckets go out by ``update_weights`` RPC."""

    def __init__(self, rpc: Callable[[dict], None], staging: SharedMemoryBuffer,
                 bucket_bytes: int) -> None:
        self._writer = BucketWriter(staging, bucket_bytes,
                                    ship=lambda bucket: rpc(bucket.to_update_info()))
        self.add = self._writer.add
        self.add_pieces = self._writer.add_pieces
        self.flush = self._writer.flush

    num_tensors = property(lambda self: self._writer.num_tensors)
    num_bytes = property(lambda self: self._writer.num_bytes)
    num_buckets = property(lambda self: self._writer.num_buckets)


class _CudaIpcSender:
    """``r1core_ipc``: each bucket is a list of device tensors whose IPC handles travel.

    Tensors are not split: an IPC handle hands the worker the tensor where it lies, so a
    bucket only bounds how many tensors are kept alive at once.
    """

    def __init__(self, rpc: Callable[[dict], None], bucket_bytes: int) -> None:
        self._rpc = rpc
        self._bucket_bytes = bucket_bytes
        self._uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
        self._bucket: list[tuple[str, torch.Tensor]] = []
        self._used = 0
        self.num_tensors = self.num_bytes = self.num_buckets = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().to("cuda").contiguous()
        size = tensor.numel() * tensor.element_size()
        if self._bucket and self._used + size > self._bucket_bytes:
            self.flush()
        self._bucket.append((name, tensor))
        self._used += size
        self.num_tensors += 1
        self.num_bytes += size

    def add_pieces(self, name: str, dtype: torch.dtype, shape: tuple[int, ...],
                   fill: PieceFiller) -> None:
        tensor = torch.empty(shape, dtype=dtype, device="cuda")
        fill(tensor.view(-1), 0, tensor.numel())
        self.add(name, tensor)

    def flush(self) -> None:
        from torch.multiprocessing.reductions import reduce_tensor

        if not self._bucket:
            return
        info = {
            "names": [n for n, _ in self._bucket],
            "dtype_names": [dtype_name(t.dtype) for _, t in self._bucket],
            "shapes": [list(t.shape) for _, t in self._bucket],
            "ipc_handles": [{self._uuid: reduce_tensor(t)[1]} for _, t in self._bucket],
        }
        # The copies to these tensors must be complete before the worker reads them.
        torch.cuda.synchronize()
        self._rpc(info)
        self._bucket, self._used = [], 0
        self.num_buckets += 1


class WeightUpdate:
    """An open weight update; see the module docstring. Not thread-safe; one at a time.

    Use it as a context manager, or call :meth:`finish` (success) or :meth:`abort`
    (the source failed: the engine is closed and tagged incomplete) exactly once.
    """

    def __init__(self, rollout: Any, version: str) -> None:
        """``rollout``: the ``VLLMRollout`` that opened the update (this module does not import
        it: ``vllm_rollout`` imports this one)."""
        self.rollout = rollout
        self.version = version
        self._start = time.perf_counter()
        self._closed = False
        # False once a worker failed inside ``update_weights``: vLLM's worker has then
        # ended the update itself (and r1core's backend finalised its reload).
        self._worker_open = True
        if rollout.backend == "r1core_shm":
            staging = rollout._staging
            assert staging is not None
            self._sender: _Sender = _SharedMemorySender(self._rpc, staging,
                                                        rollout.config.bucket_bytes)
            self.staging_bytes = staging.num_bytes
        elif rollout.backend == "r1core_ipc":
            self._sender = _CudaIpcSender(self._rpc, rollout.config.bucket_bytes)
            self.staging_bytes = 0
        else:
            raise ValueError(f"no trainer-side sender for backend {rollout.backend!r}")

    def _rpc(self, update_info: dict) -> None:
        try:
            self.rollout.llm.collective_rpc("update_weights", kwargs={"update_info": update_info})
        except BaseException:
            self._worker_open = False
            raise

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Send ``tensor`` (Hugging Face name, full tensor, any device/dtype/strides)."""
        with torch.no_grad():
            self._sender.add(name, tensor)

    def add_pieces(self, name: str, dtype: torch.dtype, shape: tuple[int, ...],
                   fill: PieceFiller) -> None:
        """Send a tensor of ``dtype``/``shape`` whose flattened elements
        ``[start, start+numel)`` ``fill(destination, start, numel)`` writes into a 1-D
        ``destination``; on CPU the destination lies in the staging buffer, so the whole
        tensor never exists on this side."""
        with torch.no_grad():
            self._sender.add_pieces(name, dtype, tuple(shape), fill)

    def finish(self) -> SyncStats:
        """Ship the last bucket, close the engine's update and check its coverage.

        Raises ``RuntimeError`` naming what was not covered; the engine's version is
        then tagged ``"<version>-incomplete"``.
        """
        try:
            self._sender.flush()
        except BaseException as error:
            try:
                self._close()
            finally:
                self.rollout._mark_incomplete(self.version, f"{type(error).__name__}: {error}")
            raise
        self._close()
        stats = SyncStats(self.version, self._sender.num_tensors, self._sender.num_bytes,
                          self._sender.num_buckets, time.perf_counter() - self._start,
                          self.staging_bytes)
        self.rollout._finished_update(self.version)
        return stats

    def abort(self, reason: str = "the trainer stopped sending") -> None:
        """Close the engine's update after a failure on the trainer side; the engine then
        refuses to generate until a complete update succeeds."""
        if not self._closed:
            try:
                self._close()
            finally:
                self.rollout._mark_incomplete(self.version, reason)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        llm = self.rollout.llm
        try:
            # Always close the update, or the worker refuses every later one.
            if self._worker_open:
                llm.collective_rpc("finish_weight_update")
            else:
                # The failing worker has closed its update; others (engine TP > 1) may not.
                try:
                    llm.collective_rpc("finish_weight_update")
                except RuntimeError:
                    pass
        finally:
            # Whatever happened, blocks computed with the old weights must go.
            if not llm.reset_prefix_cache():
                raise RuntimeError("vLLM refused to reset its prefix cache after a weight sync")

    def __enter__(self) -> WeightUpdate:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.finish()
