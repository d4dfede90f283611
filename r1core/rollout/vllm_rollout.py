"""vLLM rollout engine: token-in/token-out sampling with log-probs, and weight sync.

``VLLMRollout`` owns one ``vllm.LLM``. It samples with ``logprobs_mode=
"processed_logprobs"`` so the returned log-probs are those of the distribution the
sampler drew from (after temperature), which is what importance ratios need. Weights
come from the trainer through ``sync_weights`` over r1core's registered weight-transfer
backend (see ``weight_transfer.py``): shared memory on CPU, CUDA IPC on GPU.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from r1core._extras import require
from r1core.rollout.bridge import SharedMemoryBuffer, WeightSource
from r1core.rollout.config import RolloutConfig
from r1core.rollout.weight_update import SyncStats, WeightUpdate

#: Tokens per engine step on CPU (vLLM's CPU default), raised to the engine length when longer.
CPU_BATCHED_TOKENS = 4096


# ---------------------------------------------------------------------- logging set-up

# vLLM messages that say nothing wrong about an r1core run, dropped from a quiet console:
# - "Chat template warmup failed": the engine runs without a tokenizer (prompts are token
#   ids), so there is no chat template to warm up; vLLM logs it with a traceback.
# - "<Layer>: Failed to load weights" for rotary caches and a tied LM head: a weight sync
#   sends checkpoint tensors only, and these layers hold none of their own (the rotary cos/sin
#   cache is derived, a tied head is the embedding). r1core's sync checks every parameter it
#   sends itself and refuses an engine left stale (``weight_update.py``).
# - Start-up notes about choices r1core makes on purpose: no tokenizer in the engine (r1core
#   passes the stop token ids itself), eager mode (``enforce_eager``), per-request seeds.
# - The CPU backend's notes (no Triton CPU backend, thread binding, the OMP_NUM_THREADS the
#   user set, preload hints for its allocator): they describe the platform, not the run, and
#   repeat for every engine.
# - Chunked prefill switched off on CPU: r1core does it on purpose (a CPU torch.Generator
#   cannot be rewound, see ``_build_engine``); vLLM warns about any model that supports it by default.
# - "Unknown vLLM environment variable" for VLLM_DIST_IDENT: vLLM's own CPU worker sets it in
#   the process that hosts an in-process engine, and the next engine built there (or in a
#   process started from it) reports it as unknown. Other unknown variables are still shown.
# - vLLM ending its engine processes with SIGKILL when they take longer than its 5 s grace
#   period to tear down (seen on every close of an engine in its own process on a busy CPU).
HARMLESS_VLLM_MESSAGES = (
    r"^Chat template warmup failed",
    r"^\w*(RotaryEmbedding|ParallelLMHead): Failed to load weights$",
    r"^Using None for EOS token id because tokenizer is not initialized",
    r"^The global random seed is set to",
    r"^Enforce eager set",
    r"^Inductor compilation was disabled",
    r"^Triton is (not installed|installed, but doesn't include CPU backend)",
    r"^Model Runner V2 requires Triton",
    r"^Reset SSM cache type",
    r"^This model does not officially support disabling chunked prefill",
    r"^Unknown vLLM environment variable detected: VLLM_DIST_IDENT$",
    r"^CPU backend doesn't allow to use `torch.set_num_threads`",
    r"^OMP_NUM_THREADS=\d+ is set; leaving Torch threads at",
    r"^lib(tcmalloc|iomp) is not found in LD_PRELOAD",
    r"^\[shutdown\] (Process manager: force killing remaining process|force killing sub process|"
    r"Executor: workers still running after)",
)


class HarmlessVLLMMessages(logging.Filter):
    """Drops :data:`HARMLESS_VLLM_MESSAGES` (installed on vLLM's handler in every process
    through ``VLLM_LOGGING_CONFIG_PATH``)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.patterns = [re.compile(pattern) for pattern in HARMLESS_VLLM_MESSAGES]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is shown as it is
            return True
        return not any(pattern.search(message) for pattern in self.patterns)


def quiet_spawned_engine() -> None:
    """In an engine process the run spawned (vLLM's engine core), before vLLM is imported:
    drop :data:`HARMLESS_VLLM_MESSAGES` that vLLM logs before its logging configuration is
    applied (they reach Python's last-resort handler) and vLLM's deprecation warnings.
    ``VLLM_LOGGING_CONFIG_PATH``, inherited from the trainer, covers everything after."""
    if logging.lastResort is not None:
        logging.lastResort.addFilter(HarmlessVLLMMessages())
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm(\.|$)")


def configure_vllm_logging(verbose: bool = False, directory: str | None = None) -> str:
    """vLLM's logging for this process and the engine processes it spawns: WARNING and up,
    :data:`HARMLESS_VLLM_MESSAGES` dropped (``verbose``: INFO and up, nothing dropped).

    vLLM reads ``VLLM_LOGGING_CONFIG_PATH`` when it is imported and whenever it configures an
    engine, in every process; the JSON written here (into ``directory``, default the
    system's temporary folder) is that configuration. Returns its path.
    """
    level = "INFO" if verbose else "WARNING"
    handler: dict[str, Any] = {"class": "logging.StreamHandler", "formatter": "r1core_vllm", "level": level,
                               "stream": "ext://sys.stderr"}
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"r1core_vllm": {"format": "vLLM %(levelname)s %(asctime)s %(message)s",
                                       "datefmt": "%H:%M:%S"}},
        "filters": {} if verbose else {"harmless": {"()": f"{__name__}.HarmlessVLLMMessages"}},
        "handlers": {"vllm": handler if verbose else {**handler, "filters": ["harmless"]}},
        "loggers": {"vllm": {"handlers": ["vllm"], "level": level, "propagate": False}},
    }
    # One file per level, the same for every process; replaced atomically, so a reader
    # never sees half of it.
    path = os.path.join(directory or tempfile.gettempdir(), f"r1core-vllm-logging-{level.lower()}.json")
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w") as handle:
        json.dump(config, handle)
    os.replace(partial, path)
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = path
    os.environ["VLLM_LOGGING_LEVEL"] = level
    os.environ["VLLM_CONFIGURE_LOGGING"] = "1"
    if "vllm.logger" in sys.modules:  # already imported: apply now as well
        logging.config.dictConfig(config)
    if not verbose:
        # Messages logged before vLLM's own configuration is applied reach the root logger.
        for root_handler in logging.getLogger().handlers:
            if not any(isinstance(f, HarmlessVLLMMessages) for f in root_handler.filters):
                root_handler.addFilter(HarmlessVLLMMessages())
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm(\.|$)")
        if logging.lastResort is not None:
            logging.lastResort.addFilter(HarmlessVLLMMessages())
    return path


@dataclass
class RolloutSample:
    """One sampled continuation of a prompt."""

    token_ids: list[int]
    """Generated tokens (the prompt excluded)."""
    logprobs: list[float]
    """log p(token) of each generated token under the sampling distribution (after
    temperature), as the sampler saw it; same length as ``token_ids``."""
    finish_reason: str
    """"stop" (EOS or a stop token) or "length" (``max_tokens`` reached)."""
    weight_version: str
    """Version tag of the weights that produced every token of this sample."""
    routes: torch.Tensor | None = None
    """Rollout routing replay: the experts the engine chose, integer
    ``[len(prompt) + len(token_ids) - 1, num_moe_layers, top_k]`` (row ``t``: token ``t`` of
    prompt + response; the last sampled token is never run), global expert indices, MoE layers
    in model order. None for dense models or with ``RolloutConfig.routing_replay`` off. The
    trainer passes it unchanged as ``MicroBatch.routes`` / ``Policy.logprobs(routes=...)``."""


class VLLMRollout:
    """A vLLM engine for GRPO rollouts, in-process or in its own process.

    Args:
        hf_dir: Hugging Face checkpoint directory (config + safetensors). No tokenizer
            is needed: prompts are token ids.
        max_model_len: Overrides ``config.max_model_len``.
        config: Engine and sync settings; defaults to ``RolloutConfig()``.
        **overrides: Any other ``RolloutConfig`` field, e.g. ``dtype="float32"``.

    With ``engine_mode="own_process"`` the caller must construct this under
    ``if __name__ == "__main__":`` (vLLM spawns the engine core). vLLM caches its
    environment after the first engine, so use one engine mode per process.
    """

    def __init__(
        self,
        hf_dir: str | os.PathLike,
        *,
        max_model_len: int | None = None,
        config: RolloutConfig | None = None,
        **overrides: Any,
    ) -> None:
        config = config or RolloutConfig()
        if max_model_len is not None:
            overrides["max_model_len"] = max_model_len
        self.config = replace(config, **overrides) if overrides else config
        self.hf_dir = os.fspath(hf_dir)
        if not os.path.isfile(os.path.join(self.hf_dir, "config.json")):
            raise FileNotFoundError(f"{self.hf_dir!r} has no config.json (not a HF model dir)")
        self.weight_version = "0"
        self._num_syncs = 0
        self._on_cuda = torch.cuda.is_available()
        self.backend = self.config.weight_transfer_backend or (
            "r1core_ipc" if self._on_cuda else "r1core_shm"
        )
        self.sleep_enabled = (
            self._on_cuda if self.config.enable_sleep_mode is None
            else self.config.enable_sleep_mode
        )
        self._asleep = False
        #: Why the engine must not generate (an open or failed weight update), or None.
        self._unusable: str | None = None
        self._staging: SharedMemoryBuffer | None = None
        self._transfer_ready = False
        self.eos_token_ids = _eos_token_ids(self.hf_dir)
        self.moe_layers = _moe_layers(self.hf_dir)
        self.routing_replay = _routing_replay_enabled(self.config.routing_replay, bool(self.moe_layers))
        self.llm = self._build_engine()
        self.llm.llm_engine.set_weight_version(self.weight_version)

    def _build_engine(self):
        vllm = require("vllm", extra="rollout-cpu", feature="r1core.rollout.VLLMRollout")
        from vllm.config import WeightTransferConfig

        # Registers r1core's backends in this process (the in-process worker's registry).
        import r1core.rollout.weight_transfer  # noqa: F401

        config = self.config
        engine_kwargs: dict[str, Any] = dict(
            model=self.hf_dir,
            skip_tokenizer_init=True,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            seed=config.seed,
            enforce_eager=config.enforce_eager,
            enable_prefix_caching=config.enable_prefix_caching,
            tensor_parallel_size=config.tensor_parallel_size,
            logprobs_mode="processed_logprobs",
            # The run draws one progress bar of its own; vLLM's loading bar would sit under it.
            use_tqdm_on_load=False,
            weight_transfer_config=WeightTransferConfig(backend=self.backend),
            # Imported by each worker before the model loads: registers the backends
            # in a spawned engine process too.
            worker_extension_cls="r1core.rollout.weight_transfer.R1coreWorkerExtension",
        )
        if config.kv_cache_memory_bytes is not None:
            engine_kwargs["kv_cache_memory_bytes"] = config.kv_cache_memory_bytes
        if self.routing_replay:
            engine_kwargs["enable_return_routed_experts"] = True
        if self._on_cuda:
            engine_kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
            engine_kwargs["enable_sleep_mode"] = self.sleep_enabled
        else:
            # A prompt whose prefill is split across engine steps makes vLLM rewind the
            # request's seeded generator, which a CPU torch.Generator cannot do ("CPU Generator
            # does not use offset"): every prompt is prefilled in one step instead.
            engine_kwargs["enable_chunked_prefill"] = False
            engine_kwargs["max_num_batched_tokens"] = max(CPU_BATCHED_TOKENS, config.max_model_len)
        if config.engine_mode == "in_process":
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                # vLLM's in-process worker adopts an existing default process group and
                # then waits forever for the other ranks in its group creation.
                raise RuntimeError(
                    "engine_mode='in_process' cannot run inside a multi-rank torch.distributed "
                    "job (vLLM would take over the trainer's process group and hang); use "
                    "engine_mode='own_process'"
                )
        # Read by vLLM when the engine is built and cached afterwards: one mode per process.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = (
            "0" if config.engine_mode == "in_process" else "1"
        )
        return vllm.LLM(**engine_kwargs)

    # ------------------------------------------------------------------ sampling

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        n: int,
        max_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        stop: Sequence[int] | None = None,
        seed: int | None = None,
    ) -> list[list[RolloutSample]]:
        """Sample ``n`` continuations of each prompt.

        Args:
            prompts: token ids per prompt (no tokenizer involved).
            n: samples per prompt (the GRPO group size).
            max_tokens: generation budget per sample.
            temperature: 0 means greedy.
            top_p: nucleus mass.
            stop: token ids that end a sample besides the model's EOS ids (read from
                ``config.json``/``generation_config.json``: without a tokenizer vLLM
                does not know them); the stop token is kept in ``token_ids``.
            seed: per-request seed; prompt ``i`` uses ``seed + i`` so that prompts
                sharing a seed do not share samples.

        Returns:
            ``result[i][j]`` is sample ``j`` of prompt ``i``.
        """
        from vllm import SamplingParams

        if self._unusable is not None:
            raise RuntimeError(self._unusable)
        if n <= 0 or max_tokens <= 0:
            raise ValueError(f"n and max_tokens must be positive, got n={n}, max_tokens={max_tokens}")
        if not prompts:
            return []
        for index, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {index} is empty")
            if len(prompt) + max_tokens > self.config.max_model_len:
                raise ValueError(
                    f"prompt {index} ({len(prompt)} tokens) + max_tokens ({max_tokens}) exceeds "
                    f"max_model_len ({self.config.max_model_len})"
                )
        if self._asleep:
            self.wake_up()
        params = [
            SamplingParams(
                n=n,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                stop_token_ids=sorted(set(self.eos_token_ids) | set(stop or ())) or None,
                include_stop_str_in_output=True,
                seed=None if seed is None else seed + index,
                logprobs=0,  # the sampled token's log-prob only
                detokenize=False,
            )
            for index in range(len(prompts))
        ]
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(map(int, p))} for p in prompts], params, use_tqdm=False
        )
        return [[self._to_sample(c) for c in out.outputs] for out in outputs]

    def _to_sample(self, completion) -> RolloutSample:
        token_ids = list(completion.token_ids)
        logprobs = [
            step[token].logprob for token, step in zip(token_ids, completion.logprobs or [])
        ]
        if len(logprobs) != len(token_ids):
            raise RuntimeError(
                f"vLLM returned {len(logprobs)} log-probs for {len(token_ids)} tokens"
            )
        spans = completion.weight_versions or []
        versions = {span.version for span in spans}
        if len(versions) > 1:
            # Cannot happen with the blocking sync used here; a sample mixing weights
            # would be off-policy in a way the loss cannot correct, so refuse it.
            raise RuntimeError(f"sample produced by several weight versions: {spans}")
        version = versions.pop() if versions else self.weight_version
        routes = None
        if self.routing_replay:
            captured = getattr(completion, "routed_experts", None)
            if captured is None:
                raise RuntimeError("routing replay is on but vLLM returned no routed experts for a sample")
            # vLLM reports every decoder layer ([positions, layers, top_k]); keep the MoE ones.
            routes = torch.from_numpy(captured[:, self.moe_layers].astype("int64"))
        return RolloutSample(token_ids, logprobs, completion.finish_reason or "length", version, routes)

    # ------------------------------------------------------------------ weights

    def sync_weights(
        self, source: WeightSource, *, weight_version: str | None = None
    ) -> SyncStats:
        """Stream ``source.iter_hf_weights()`` into the engine and tag the new version.

        Tensors are packed into a staging buffer of exactly ``config.bucket_bytes`` (a
        larger tensor travels in pieces over several buckets); each bucket is loaded
        layer by layer before the next one is staged. At the end the engine checks that
        every parameter, and every shard of a fused one, was updated (else
        ``RuntimeError``, and the version is tagged ``"<version>-incomplete"``),
        refreshes on CPU what the reload leaves stale (a tied LM head, packed MoE
        experts), and the prefix cache is reset so no KV block computed with the old
        weights is reused. With engine TP > 1 every engine worker reads the same full
        tensors and keeps its own shard.

        Single-process source only; a Megatron policy split over ranks goes through
        ``r1core.rollout.sync_policy_weights``, called on every rank.
        """
        if not hasattr(source, "iter_hf_weights"):
            raise TypeError(
                f"sync_weights needs an object with iter_hf_weights(), got {type(source).__name__}"
            )
        update = self.start_weight_update(weight_version=weight_version)
        try:
            for name, tensor in source.iter_hf_weights():
                update.add(name, tensor)
        except BaseException:
            update.abort()
            raise
        return update.finish()

    def start_weight_update(self, *, weight_version: str | None = None) -> WeightUpdate:
        """Open a weight update: add tensors to it, then ``finish()`` (see
        ``weight_update.py``). The engine must not generate until it is finished."""
        version = weight_version or str(self._num_syncs + 1)
        if self._asleep:
            # Weights first, so the KV cache is not resident while they stream in.
            self.llm.wake_up(tags=["weights"])
        if self.backend not in ("r1core_shm", "r1core_ipc"):
            raise ValueError(f"no trainer-side sender for backend {self.backend!r}")
        self._init_transfer()
        self._unusable = (
            f"a weight update to version {version!r} is in progress: the engine holds a mix of old "
            "and new weights and refuses to generate until the update finishes"
        )
        self.llm.collective_rpc("start_weight_update")
        return WeightUpdate(self, version)

    def _finished_update(self, version: str) -> None:
        """Called by ``WeightUpdate.finish`` once the engine closed the update."""
        problems = [p for worker in self.llm.collective_rpc("r1core_sync_problems")
                    for p in worker]
        if problems:
            # The engine now mixes old and new weights: mark it so no sample passes as
            # coming from a clean version.
            message = "; ".join(sorted(set(problems)))
            self._mark_incomplete(version, message)
            raise RuntimeError(message)
        self.llm.llm_engine.set_weight_version(version)
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.weight_version = version
        self._num_syncs += 1
        self._unusable = None

    def _mark_incomplete(self, version: str, reason: str = "") -> None:
        self.weight_version = f"{version}-incomplete"
        self.llm.llm_engine.set_weight_version(self.weight_version)
        self._unusable = (
            f"the weight update to version {version!r} failed{': ' + reason if reason else ''}; the engine "
            "holds a mix of old and new weights and refuses to generate until a complete sync succeeds"
        )

    def set_bucket_bytes(self, bucket_bytes: int) -> None:
        """Change the bucket bound; the staging buffer is re-made at the next sync."""
        if bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
        self.config = replace(self.config, bucket_bytes=bucket_bytes)
        if self._transfer_ready:
            # The worker drops its mapping of the old file, so its pages can go.
            self.llm.collective_rpc("shutdown_weight_transfer_engine")
        if self._staging is not None:
            self._staging.close()
            self._staging = None
        self._transfer_ready = False

    def _init_transfer(self) -> None:
        """Hand the worker its side of the transport, once per engine."""
        if self._transfer_ready:
            return
        if self.backend == "r1core_shm":
            self._staging = SharedMemoryBuffer(self.config.bucket_bytes)
            init_info: dict[str, Any] = {"path": self._staging.path}
        else:
            init_info = {"packed": False}
        self.llm.collective_rpc("init_weight_transfer_engine", kwargs={"init_info": init_info})
        self._transfer_ready = True

    # ------------------------------------------------------------------ memory

    def sleep(self, level: int = 1) -> None:
        """Release engine memory while the trainer runs (no-op where sleep is off).

        Level 1 keeps a CPU copy of the weights; level 2 drops them (the next
        ``sync_weights`` brings new ones, which is the RL case).
        """
        if self.sleep_enabled and not self._asleep:
            self.llm.sleep(level=level)
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def close(self) -> None:
        """Shut the engine down and remove the staging file.

        In-process mode: vLLM's shutdown also tears down its process-wide parallel state,
        so close an engine only when no other in-process engine is still to be used.
        """
        if self._staging is not None:
            self._staging.close()
            self._staging = None
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            self.llm = None

    def __enter__(self) -> VLLMRollout:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _moe_layers(hf_dir: str) -> list[int]:
    """Indices of the MoE layers of the checkpoint (empty for a dense model)."""
    from r1core.models.hf_config import from_hf_config

    pattern = from_hf_config(hf_dir).moe_layer_pattern
    return [index for index, moe in enumerate(pattern) if moe]


def _routing_replay_enabled(requested: bool | None, moe: bool) -> bool:
    """Whether to ask vLLM for routed experts (see ``RolloutConfig.routing_replay``)."""
    if not moe:
        return False
    from vllm.triton_utils import HAS_TRITON

    if requested is None:
        return bool(HAS_TRITON) and torch.cuda.is_available()
    if requested and not (HAS_TRITON and torch.cuda.is_available()):
        raise ValueError(
            "routing_replay=True: vLLM returns routed experts only from its Model Runner V2, which "
            "needs Triton with a GPU backend (not available here); set routing_replay=False"
        )
    return requested


def _eos_token_ids(hf_dir: str) -> list[int]:
    """EOS ids of a Hugging Face model dir (generation config first, then config)."""
    import json

    ids: set[int] = set()
    for file_name in ("generation_config.json", "config.json"):
        path = os.path.join(hf_dir, file_name)
        if not os.path.isfile(path):
            continue
        with open(path) as handle:
            value = json.load(handle).get("eos_token_id")
        if value is not None:
            ids.update([value] if isinstance(value, int) else value)
    return sorted(ids)
