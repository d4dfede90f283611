"""Engine (worker) side of the weight sync: r1core's vLLM weight-transfer backends.

Two backends registered with ``WeightTransferEngineFactory``:

* ``r1core_shm`` (CPU): the trainer stages a bucket in a ``/dev/shm`` file the worker
  maps once (an in-process worker uses the trainer's own mapping); ``update_weights``
  carries only ``(name, dtype, shape, offset, start, numel)`` records. A tensor larger
  than the bucket arrives in pieces: vocabulary matrices are written in place into the
  live weight (``inplace_embedding.py``), any other split tensor is reassembled in a
  tensor of its own and handed to vLLM's loader once complete.
* ``r1core_ipc`` (CUDA): vLLM's CUDA-IPC engine with the same checks added.

Both receive Hugging Face names and reload through vLLM's layerwise reload (each layer
is materialised, loaded and re-processed, e.g. re-packed for oneDNN on CPU, as soon as
its last shard arrives), and both add what a reload alone does not do:

* a coverage check at ``finish``: every engine parameter must have been loaded,
  otherwise the engine would silently mix old and new weights;
* on CPU, a refresh of a tied LM head: the reload processes the shared embedding once
  as an embedding, and the LM head's packed GEMM copy stays stale;
* on CPU, a re-pack of MoE experts, which vLLM's reload leaves in checkpoint layout
  inside the kernel's packed storage.

vLLM imports this module in the engine's worker through ``worker_extension_cls``
(``R1coreWorkerExtension``), which is what registers the backends in a spawned worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from r1core._extras import require

require("vllm", extra="rollout-cpu", feature="r1core.rollout")

from vllm.distributed.weight_transfer.base import (  # noqa: E402
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory  # noqa: E402
from vllm.model_executor.model_loader.reload import (  # noqa: E402
    finalize_layerwise_reload,
    initialize_layerwise_reload,
)
from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO  # noqa: E402

from r1core.rollout.bridge import _numel, dtype_from_name, local_buffer, view_in_buffer  # noqa: E402
from r1core.rollout.inplace_embedding import InPlaceEmbeddings, rebuild_post_load  # noqa: E402

SHM_BACKEND = "r1core_shm"
IPC_BACKEND = "r1core_ipc"


@dataclass
class SharedMemoryInitInfo(WeightTransferInitInfo):
    """Sent once: the path of the trainer's staging file."""

    path: str = ""


@dataclass
class SharedMemoryUpdateInfo(WeightTransferUpdateInfo):
    """One bucket: where each tensor lies in the staging file."""

    names: list[str] = field(default_factory=list)
    dtype_names: list[str] = field(default_factory=list)
    shapes: list[list[int]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    """First flattened element of the tensor each record holds (0: whole tensor)."""
    numels: list[int] = field(default_factory=list)
    """Elements each record holds (``prod(shape)``: whole tensor)."""
    buffer_bytes: int = 0

    def __post_init__(self) -> None:
        num = len(self.names)
        if not self.starts and not self.numels:  # whole tensors only
            self.starts = [0] * num
            self.numels = [_numel(shape) for shape in self.shapes]
        for label, values in (("dtype_names", self.dtype_names), ("shapes", self.shapes),
                              ("offsets", self.offsets), ("starts", self.starts),
                              ("numels", self.numels)):
            if len(values) != num:
                raise ValueError(f"{label} has {len(values)} entries for {num} names")


class _CheckedReload:
    """Layerwise reload bracketed by a coverage check and the CPU tied-head refresh.

    Mixed into both backends; ``self.model`` / ``self.model_config`` come from vLLM's
    ``WeightTransferEngine``.
    """

    model: torch.nn.Module
    sync_problems: list[str] = []

    def _begin_reload(self) -> None:
        # Names must be read before the reload moves the layers to the meta device.
        self._expected_names = expected_parameters(self.model)
        self._loaded_names: set[str] = set()
        initialize_layerwise_reload(self.model)

    def _load(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        loaded = self.model.load_weights(weights)
        if loaded is not None:
            self._loaded_names.update(loaded)

    def _finish_reload(self) -> None:
        """Finalise the reload and record (not raise) what was missing.

        Raising here would leave vLLM's worker inside an update it cannot leave; the
        trainer reads ``sync_problems`` through ``R1coreWorkerExtension`` and raises.
        """
        problems: list[str] = []
        partial = _partially_loaded_layers(self.model)
        try:
            finalize_layerwise_reload(self.model, self.model_config)
        except Exception as error:  # noqa: BLE001 - recorded; the trainer raises it
            # vLLM cannot put back the old tensors of some half-loaded layers (e.g. CPU-packed
            # MoE experts); the engine stays unusable until a complete update, and vLLM's
            # worker must still leave the update (raising here would keep it open).
            problems.append(f"vLLM could not finalise the partial reload: {type(error).__name__}: {error}")
        if partial:
            problems.append(
                f"weight sync sent only some shards of {len(partial)} fused layer(s), e.g. "
                f"{partial[:8]}; send q/k/v together and gate/up together."
            )
        missing = self._expected_names - self._loaded_names
        if missing:
            problems.append(
                f"weight sync left {len(missing)} engine parameter(s) stale (not sent by the "
                f"trainer), e.g. {sorted(missing)[:8]}. Send every parameter, all shards of "
                "fused ones (q/k/v together, gate/up together)."
            )
        self.sync_problems = problems
        refresh_tied_lm_head(self.model)
        refresh_cpu_moe_prepack(self.model)

    def _abort_update(self, error: BaseException) -> None:
        """Close the reload after ``update_weights`` failed.

        vLLM's worker then ends the update itself without calling
        ``finish_weight_update``, which would leave the layers on the meta device; so
        the reload is finalised here (layers not loaded get their old tensors back) and
        the failure recorded for ``r1core_sync_problems``.
        """
        try:
            self.finish_weight_update()
        finally:
            self.sync_problems = [f"weight update failed in the engine: {error}",
                                  *self.sync_problems]


#: Engine parameters vLLM derives from loaded ones after loading, never sent by a trainer:
#: multi-head latent attention splits ``kv_b_proj`` into ``W_UK_T`` / ``W_UV`` (and packed or
#: quantised forms of them). ``kv_b_proj`` itself is checked like any parameter.
DERIVED_PARAMETERS = frozenset({"W_UK_T", "W_UV", "W_UK", "W_UV_O", "W_K", "W_V", "W_K_scale", "W_V_scale"})


def expected_parameters(model: torch.nn.Module) -> set[str]:
    """The engine parameters a complete weight update must load (derived ones excluded)."""
    return {name for name, _ in model.named_parameters()
            if name.rpartition(".")[2] not in DERIVED_PARAMETERS}


def _partially_loaded_layers(model: torch.nn.Module) -> list[str]:
    """Layers that received some but not all of their elements during this reload.

    A fused parameter (qkv_proj, gate_up_proj) counts as loaded by name as soon as one
    shard arrives, so the name check alone misses a missing shard. The layerwise reload
    processes a layer once its element count is complete; anything still pending at
    ``finish`` with a non-zero count is partial. Vocabulary embeddings are skipped: their
    padding rows are never loaded by design.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    partial = []
    for name, module in model.named_modules():
        info = LAYERWISE_INFO.get(module)
        if info is None or not info.can_load() or isinstance(module, VocabParallelEmbedding):
            continue
        if 0 < info.load_numel < (info.load_numel_total or 0):
            partial.append(name)
    return partial


def refresh_cpu_moe_prepack(model: torch.nn.Module) -> int:
    """Re-pack MoE expert weights into the CPU kernel's grouped-GEMM layout after a reload.

    Returns how many MoE layers were re-packed. vLLM's unquantized MoE method runs the
    experts' own ``process_weights_after_loading`` (on CPU: the prepack) only on the first
    load; on a weight update it skips it, and the layerwise reload copies the new
    weights, in checkpoint layout, into the packed storage. Without this the engine runs
    the stale kernel layout on new numbers: wrong tokens, no error.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return 0
    num_layers = 0
    for module in model.modules():
        kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
        fused_experts = getattr(kernel, "fused_experts", None)
        if fused_experts is not None and hasattr(fused_experts, "process_weights_after_loading"):
            fused_experts.process_weights_after_loading(module)
            num_layers += 1
    return num_layers


def refresh_tied_lm_head(model: torch.nn.Module) -> bool:
    """Re-run the LM head's post-load processing when it shares the embedding's weight.

    Returns whether a refresh happened. On CPU the LM head keeps a packed GEMM copy of
    the weight; the layerwise reload processes the shared module once, as the
    embedding, so that copy would keep the old values. On GPU this is a cheap no-op.
    """
    lm_head = getattr(model, "lm_head", None)
    config = getattr(model, "config", None)
    if lm_head is None or not getattr(config, "tie_word_embeddings", False):
        return False
    quant_method = getattr(lm_head, "quant_method", None)
    if quant_method is None or not hasattr(quant_method, "process_weights_after_loading"):
        return False
    rebuild_post_load(lm_head)
    return True


class _Reassembly:
    """A tensor larger than the bucket, filled piece by piece (flattened element ranges)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.received = 0

    def put(self, piece: torch.Tensor, start: int) -> None:
        flat = self.tensor.view(-1)
        if start < 0 or start + piece.numel() > flat.numel():
            raise ValueError(
                f"piece [{start}, {start + piece.numel()}) outside a {flat.numel()}-element tensor"
            )
        flat[start : start + piece.numel()].copy_(piece)
        self.received += piece.numel()

    @property
    def complete(self) -> bool:
        return self.received >= self.tensor.numel()


class SharedMemoryWeightTransferEngine(
    _CheckedReload, WeightTransferEngine[SharedMemoryInitInfo, SharedMemoryUpdateInfo]
):
    """CPU backend: buckets arrive in a shared ``/dev/shm`` file."""

    init_info_cls = SharedMemoryInitInfo
    update_info_cls = SharedMemoryUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._path: str | None = None
        self._buffer = torch.empty(0, dtype=torch.uint8)
        self._pieces: dict[str, _Reassembly] = {}
        self._inplace: InPlaceEmbeddings | None = None
        self.reassembled: list[str] = []
        """Names of the split tensors the last update reassembled for vLLM's loaders."""
        self.detached_bytes = 0
        """Bytes the last update copied out of the buffer for layers straddling buckets."""
        self.written_in_place: list[str] = []
        """Engine parameters the last update wrote in place (vocabulary matrices)."""

    def init_transfer_engine(self, init_info: SharedMemoryInitInfo) -> None:
        if not init_info.path:
            raise ValueError("r1core_shm init_info needs the staging file's 'path'")
        self._path = init_info.path
        self._buffer = torch.empty(0, dtype=torch.uint8)

    def _map(self, num_bytes: int) -> torch.Tensor:
        if self._path is None:
            raise RuntimeError("update_weights before init_weight_transfer_engine")
        if self._buffer.numel() != num_bytes:
            # In-process engine: use the trainer's own mapping (no second mapping).
            local = local_buffer(self._path)
            if local is not None and local.numel() >= num_bytes:
                self._buffer = local[:num_bytes]
            else:
                self._buffer = torch.from_file(self._path, shared=True, size=num_bytes,
                                               dtype=torch.uint8)
        return self._buffer

    def start_weight_update(self) -> None:
        self._pieces = {}
        self.reassembled = []
        self.detached_bytes = 0
        # Before the reload moves the layers to the meta device: it reads live tensors.
        self._inplace = InPlaceEmbeddings(self.model)
        self._begin_reload()

    def update_weights(self, update_info: dict) -> None:
        # The base class ends with an accelerator synchronize, which has no meaning here.
        try:
            self.receive_weights(self.parse_update_info(update_info))
        except BaseException as error:
            self._abort_update(error)
            raise

    def receive_weights(self, update_info: SharedMemoryUpdateInfo) -> None:
        assert self._inplace is not None, "update_weights outside start/finish_weight_update"
        buffer = self._map(update_info.buffer_bytes)
        weights = []
        for name, dtype_str, shape, offset, start, numel in zip(
            update_info.names, update_info.dtype_names, update_info.shapes,
            update_info.offsets, update_info.starts, update_info.numels,
        ):
            dtype = dtype_from_name(dtype_str)
            inplace_name = self._inplace.target_name(name)
            if inplace_name is not None:
                # Vocabulary matrices: straight into the live weight, no reassembly.
                self._inplace.put(inplace_name, view_in_buffer(buffer, offset, dtype, [numel]),
                                  start, shape)
                continue
            if start == 0 and numel == _numel(shape):
                weights.append((name, view_in_buffer(buffer, offset, dtype, shape)))
                continue
            # One piece of a tensor larger than the bucket: collect it in a tensor of its
            # own (the loaders take whole tensors); load it once its last piece is in.
            pending = self._pieces.get(name)
            if pending is None:
                pending = self._pieces[name] = _Reassembly(torch.empty(shape, dtype=dtype))
            pending.put(view_in_buffer(buffer, offset, dtype, [numel]), start)
            if pending.complete:
                weights.append((name, self._pieces.pop(name).tensor))
                self.reassembled.append(name)
        self._load(weights)
        self._detach_pending(buffer)

    def _detach_pending(self, buffer: torch.Tensor) -> None:
        """Copy out the views that half-loaded layers still hold into the buffer.

        A layer is processed only once all its shards arrived; until then the reload
        keeps the loader's arguments, i.e. views into this bucket, which the trainer
        overwrites with the next one. Only those (a few layers at a bucket edge) are
        copied, so the engine's extra memory stays bounded by a bucket.
        """
        storage = buffer.untyped_storage().data_ptr()
        for info in list(LAYERWISE_INFO.values()):
            for _, bound in info.loaded_weights:
                for key, value in bound.arguments.items():
                    if (isinstance(value, torch.Tensor)
                            and value.untyped_storage().data_ptr() == storage):
                        bound.arguments[key] = value.clone()
                        self.detached_bytes += value.numel() * value.element_size()

    def finish_weight_update(self) -> None:
        try:
            self._finish_shared_memory_update()
        except Exception as error:  # noqa: BLE001 - recorded; the trainer raises it
            # Raising would leave vLLM's worker inside the update (it refuses every later one);
            # the engine stays unusable until a complete update succeeds.
            self.sync_problems = [*self.sync_problems,
                                  f"the engine could not close the update: {type(error).__name__}: {error}"]
            self._pieces = {}

    def _finish_shared_memory_update(self) -> None:
        assert self._inplace is not None
        self._loaded_names.update(self._inplace.loaded_names)
        self.written_in_place = sorted(self._inplace.loaded_names)
        incomplete = self._inplace.close()
        self._finish_reload()
        if incomplete:
            self.sync_problems = self.sync_problems + [
                f"weight sync sent only part of the vocabulary weight(s) {incomplete}"
            ]
        if self._pieces:
            self.sync_problems = self.sync_problems + [
                f"weight sync left {len(self._pieces)} split tensor(s) incomplete (pieces "
                f"missing), e.g. {sorted(self._pieces)[:8]}"
            ]
            self._pieces = {}

    def shutdown(self) -> None:
        self._buffer = torch.empty(0, dtype=torch.uint8)
        self._path = None


def _make_ipc_engine() -> type:
    """``r1core_ipc``: vLLM's CUDA-IPC engine plus the coverage check (CUDA only)."""
    from vllm.distributed.weight_transfer.ipc_engine import IPCWeightTransferEngine

    class CheckedIPCWeightTransferEngine(_CheckedReload, IPCWeightTransferEngine):
        def start_weight_update(self) -> None:
            self._begin_reload()

        def receive_weights(self, update_info) -> None:  # type: ignore[override]
            # Record what the IPC engine loads so the coverage check sees it.
            original = self.model.load_weights

            def recording_load(weights):
                loaded = original(weights)
                if loaded is not None:
                    self._loaded_names.update(loaded)
                return loaded

            self.model.load_weights = recording_load
            try:
                super().receive_weights(update_info)
            finally:
                del self.model.load_weights

        def update_weights(self, update_info: dict) -> None:
            try:
                super().update_weights(update_info)
            except BaseException as error:
                self._abort_update(error)
                raise

        def finish_weight_update(self) -> None:
            self._finish_reload()
            self._packed_importer.close()

    return CheckedIPCWeightTransferEngine


def register_backends() -> None:
    """Register r1core's backends with vLLM (idempotent; runs on import)."""
    registry = WeightTransferEngineFactory._registry
    if SHM_BACKEND not in registry:
        WeightTransferEngineFactory.register_engine(SHM_BACKEND, SharedMemoryWeightTransferEngine)
    if IPC_BACKEND not in registry:
        WeightTransferEngineFactory.register_engine(
            IPC_BACKEND, f"{__name__}", "_ipc_engine_class"
        )


def __getattr__(name: str):
    # Lazy: the CUDA-IPC engine imports CUDA-only pieces of vLLM.
    if name == "_ipc_engine_class":
        return _make_ipc_engine()
    raise AttributeError(name)


class R1coreWorkerExtension:
    """``worker_extension_cls`` for vLLM.

    vLLM imports this class in every worker before the model loads; the import of this
    module is what registers r1core's backends there (a spawned worker does not inherit
    the parent's registry).
    """

    def r1core_sync_problems(self) -> list[str]:
        """What the last finished weight update failed to cover (empty when complete)."""
        engine = getattr(self, "weight_transfer_engine", None)
        return list(getattr(engine, "sync_problems", []))

    def r1core_last_update_summary(self) -> dict[str, Any]:
        """How the last update's tensors were received: ``written_in_place`` (engine
        names of vocabulary weights written into the live tensor), ``reassembled``
        (Hugging Face names of split tensors collected whole for vLLM's loaders) and
        ``detached_bytes`` (copied out of the buffer for layers straddling buckets)."""
        engine = getattr(self, "weight_transfer_engine", None)
        return {"written_in_place": list(getattr(engine, "written_in_place", [])),
                "reassembled": list(getattr(engine, "reassembled", [])),
                "detached_bytes": int(getattr(engine, "detached_bytes", 0))}


register_backends()
