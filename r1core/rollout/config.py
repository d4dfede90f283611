"""Configuration of the vLLM rollout engine and of the trainer-to-engine weight sync."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EngineMode = Literal["in_process", "own_process"]

#: Default size of one weight-sync bucket. Large enough that per-bucket RPC overhead is
#: small next to the copy (a 0.5B fp32 model is ~8 buckets), small enough to keep the
#: staging buffer a fraction of the model.
DEFAULT_BUCKET_BYTES = 256 * 1024 * 1024

#: Engine dtypes vLLM accepts by name.
ROLLOUT_DTYPES = ("auto", "float32", "bfloat16", "float16", "half", "float")


@dataclass
class RolloutConfig:
    """How the rollout engine is built and how weights reach it.

    The model itself is the Hugging Face directory passed to ``VLLMRollout``; everything
    else about the engine lives here.
    """

    max_model_len: int = 2048
    """Longest prompt + response (tokens) a request may reach."""

    dtype: str = "auto"
    """Engine dtype ("auto" keeps the checkpoint's; tests use "float32" for bitwise checks)."""

    engine_mode: EngineMode = "in_process"
    """"in_process": the engine core runs in the caller's process
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), cheapest for tests and a single-process trainer.
    "own_process": vLLM spawns the engine core; the caller's engine creation must then sit
    under ``if __name__ == "__main__":``."""

    kv_cache_memory_bytes: int | None = 64 * 1024 * 1024
    """KV-cache size to reserve. Without it the CPU backend reserves ~18 GB and starts in
    ~95 s instead of ~16 s; on GPU prefer ``None`` and ``gpu_memory_utilization``."""

    gpu_memory_utilization: float = 0.5
    """Fraction of GPU memory vLLM may take (GPU only; ignored when
    ``kv_cache_memory_bytes`` is set). Colocated with training, leave room for the policy."""

    tensor_parallel_size: int = 1
    """vLLM tensor parallelism of one engine (independent of the trainer's Megatron TP)."""

    enable_prefix_caching: bool = True
    """Share KV blocks between the ``n`` samples of a prompt. Reset after every sync."""

    enable_sleep_mode: bool | None = None
    """Release weights and KV cache while the trainer runs (vLLM sleep/wake). ``None``:
    on when CUDA is present, off on CPU where sleep does nothing."""

    weight_transfer_backend: str | None = None
    """Registered weight-transfer backend: ``"r1core_shm"`` (CPU, shared memory) or
    ``"r1core_ipc"`` (CUDA IPC). ``None`` picks by device."""

    bucket_bytes: int = DEFAULT_BUCKET_BYTES
    """Size of the weight-sync staging buffer (``r1core_shm``), exactly: a tensor larger
    than this travels in pieces over several buckets. With CUDA IPC it bounds how many
    bytes of tensors one bucket keeps alive (tensors are not split there)."""

    seed: int = 0
    """Engine seed (per-request seeds override it)."""

    enforce_eager: bool = True
    """Skip graph capture / torch.compile: start-up in seconds, and what tests need."""

    routing_replay: bool | None = None
    """Rollout routing replay (R3): return the experts the engine chose for every token of a
    MoE model (``RolloutSample.routes``), for the trainer to replay. ``None``: on for MoE
    models where vLLM can capture them (its Model Runner V2, which needs Triton with a GPU
    backend), off elsewhere; ``True`` where vLLM cannot capture them is an error."""

    def __post_init__(self) -> None:
        if self.engine_mode not in ("in_process", "own_process"):
            raise ValueError(
                f"engine_mode must be 'in_process' or 'own_process', got {self.engine_mode!r}"
            )
        if self.max_model_len <= 0:
            raise ValueError(f"max_model_len must be positive, got {self.max_model_len}")
        if self.bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes must be positive, got {self.bucket_bytes}")
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes <= 0:
            raise ValueError(
                f"kv_cache_memory_bytes must be positive or None, got {self.kv_cache_memory_bytes}"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"rollout.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"rollout.tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if self.dtype not in ROLLOUT_DTYPES:
            raise ValueError(f"rollout.dtype must be one of {', '.join(ROLLOUT_DTYPES)}, got {self.dtype!r}")
        if self.seed < 0:
            raise ValueError(f"rollout.seed must be >= 0, got {self.seed}")
