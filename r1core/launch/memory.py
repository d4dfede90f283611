"""Per-GPU memory estimate for bf16 training with Megatron-Core, and for colocated vLLM.

Every number is a formula over the model shape and the layout, stated below, evaluated for
the most loaded pipeline stage. It is an estimate to reject layouts that cannot fit and to
compare candidates; it is not a measurement, and real peaks add allocator fragmentation.

Training state (bytes per parameter held by a rank), Megatron-Core's mixed precision:
    bf16 weights 2 + fp32 gradient buffer (``main_grad``) 4 + fp32 main weights 4 + Adam
    first and second moments 4 + 4. With the distributed optimizer the last 12 bytes are
    sharded over the data-parallel ranks (dense parameters: DP x CP; expert parameters: the
    expert data-parallel size), giving ``6 + 12 / shards`` bytes per parameter.

Parameters held by a rank: transformer-layer matrices / TP (expert matrices / (EP x ETP));
norms replicated; the embedding on the first stage and the output layer on the last stage,
each ``padded_vocab x hidden / TP`` (with PP > 1 a tied output layer is still a copy).

Activations stored for backward, per layer and micro-batch, in bytes (bf16, flash attention
so no ``s^2`` score matrix, no dropout), with ``s`` = sequence length / CP, ``b`` =
micro-batch size, ``t`` = TP, ``q`` = heads x head_dim, ``g`` = KV heads x head_dim,
``f`` = MLP intermediate size:
    attention: 4sbh (norm input, QKV input; / t with sequence parallel)
               + 2sb(q + 2g)/t (Q, K, V) + 2sbq/t (attention output) + 4sb x heads/t (fp32 LSE)
    dense MLP: 4sbh (norm input, fc1 input; / t with sequence parallel)
               + sb(6f if gated else 4f)/t (fc1 output and activation output)
    MoE MLP:   4sbh (/ t with SP) + 4sbE (fp32 router logits, / t with SP)
               + (sb/t_sp) x top_k x (2h x ETP + (6 or 4) x f_moe) (dispatched tokens and
               expert intermediates; ``t_sp`` = t with sequence parallel, else 1)
               + the shared expert as a dense MLP of its size.
``recompute="full"`` keeps only each layer's input (2sbh, / t with SP) plus one layer's
activations during its recomputation; ``"none"`` and ``"selective"`` keep everything
above (selective recomputation of core attention saves nothing extra with flash attention).
The first stage of a 1F1B pipeline holds ``min(PP, micro-batches)`` micro-batches in flight
(x ``1 + (PP - 1) / (PP x VPP)`` when interleaved). The last stage also holds the logits:
``6 s b V / t`` bytes (bf16 logits and their fp32 copy for the log-softmax).

Colocated vLLM (rollout phase): weights ``2 x params / rollout_TP`` bytes; KV cache
``2 (K and V) x layers x ceil(KV heads / rollout_TP) x head_dim x 2 bytes`` per token; the
KV budget is ``gpu_memory_utilization x GPU memory`` minus the weights and what the trainer
keeps resident during rollout (nothing when its state is offloaded to host memory, else
its weights, gradients and optimizer state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from r1core.parallel.layout import ParallelLayout, padded_vocab_size
from r1core.models.shape import ModelShape

GIB = 1024**3
RECOMPUTE_MODES = ("none", "selective", "full")


@dataclass
class MemoryInputs:
    """Run settings the memory estimate needs besides the layout and the model."""

    micro_batch_size: int = 1
    sequence_length: int = 4096
    num_microbatches: int = 8
    recompute: str = "selective"
    gpu_memory_gib: float = 80.0
    overhead_gib: float = 3.0
    """CUDA context, NCCL buffers and allocator slack: an assumption, not a measurement."""
    rollout_tensor: int = 0
    """vLLM tensor-parallel size when colocated (0: no rollout estimate)."""
    gpu_memory_utilization: float = 0.6
    """Fraction of GPU memory vLLM may claim (its own setting of the same name)."""
    offload_trainer_during_rollout: bool = True


@dataclass
class MemoryEstimate:
    """Bytes per GPU on the most loaded pipeline stage, by component."""

    stage: str
    params_per_gpu: int
    expert_params_per_gpu: int
    training: dict[str, float] = field(default_factory=dict)
    rollout: dict[str, float] = field(default_factory=dict)
    gpu_memory_bytes: float = 0.0

    @property
    def training_total(self) -> float:
        return sum(self.training.values())

    @property
    def rollout_total(self) -> float:
        return sum(value for key, value in self.rollout.items() if not key.startswith("_"))

    @property
    def fits(self) -> bool:
        return self.training_total <= self.gpu_memory_bytes

    def rollout_problem(self) -> str | None:
        """Why the colocated rollout cannot fit, or None when it can (or was not asked)."""
        if not self.rollout:
            return None
        if self.rollout["_kv_budget"] <= 0:
            return "the vLLM weights alone exceed gpu_memory_utilization x GPU memory"
        others = self.rollout_total - self.rollout["vLLM KV cache"] - self.rollout["_vllm_weights"]
        if others > self.gpu_memory_bytes - self.rollout["_vllm_claim"]:
            return (
                "the trainer's resident state and overhead do not fit beside vLLM's "
                "gpu_memory_utilization share; offload the trainer or lower the utilization"
            )
        return None

    def format(self) -> str:
        lines = [
            f"memory per GPU (estimate, {self.stage}; params held: "
            f"{self.params_per_gpu / 1e9:.3f} B of which experts {self.expert_params_per_gpu / 1e9:.3f} B):"
        ]
        for key, value in self.training.items():
            lines.append(f"  train  {key:<28} {value / GIB:9.2f} GiB")
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines.append(
            f"  train  {'total':<28} {self.training_total / GIB:9.2f} GiB of "
            f"{self.gpu_memory_bytes / GIB:.0f} GiB: {verdict}"
        )
        if self.rollout:
            for key, value in self.rollout.items():
                if key.startswith("_"):
                    continue
                lines.append(f"  rollout {key:<27} {value / GIB:9.2f} GiB")
            per_token = self.rollout["_kv_bytes_per_token"]
            tokens = self.rollout["_kv_tokens"]
            lines.append(
                f"  rollout KV cache holds {int(tokens):,} tokens ({per_token / 1024:.1f} KiB/token)"
            )
            problem = self.rollout_problem()
            lines.append(f"  rollout: {'fits' if problem is None else 'DOES NOT FIT: ' + problem}")
        return "\n".join(lines)


def _layer_activation_bytes(model: ModelShape, layout: ParallelLayout, tokens: int, moe: bool) -> float:
    t = layout.tensor
    sp = t if layout.sequence_parallel else 1
    q = model.num_attention_heads * model.kv_channels
    g = model.num_kv_heads * model.kv_channels
    h = model.hidden_size
    attention = 4 * tokens * h / sp + 2 * tokens * (q + 2 * g) / t + 2 * tokens * q / t
    attention += 4 * tokens * model.num_attention_heads / t
    per_intermediate = 6 if model.gated_mlp else 4
    if not moe:
        mlp = 4 * tokens * h / sp + tokens * per_intermediate * model.ffn_hidden_size / t
    else:
        mlp = 4 * tokens * h / sp + 4 * tokens * model.num_experts / sp
        mlp += (tokens / sp) * model.moe_top_k * (
            2 * h * layout.expert_tensor + per_intermediate * model.moe_ffn_hidden_size
        )
        mlp += tokens * per_intermediate * model.shared_expert_ffn_hidden_size / t
    return attention + mlp


def estimate_memory(layout: ParallelLayout, model: ModelShape, inputs: MemoryInputs) -> MemoryEstimate:
    """Estimate per-GPU bytes for training (and colocated rollout) on the busiest stage."""
    if inputs.recompute not in RECOMPUTE_MODES:
        raise ValueError(f"recompute must be one of {RECOMPUTE_MODES}, got {inputs.recompute!r}")
    t, pp = layout.tensor, layout.pipeline
    vocab = padded_vocab_size(model.vocab_size, t)
    layers_per_stage = model.num_layers // pp
    moe_layers_per_stage = math.ceil(model.num_moe_layers / pp)
    dense_layers_per_stage = layers_per_stage - moe_layers_per_stage if model.is_moe else layers_per_stage
    norms = 2 * model.hidden_size
    dense_layer = (model.dense_layer_params() - norms) / t + norms
    moe_non_expert = (model.moe_layer_non_expert_params() - norms) / t + norms
    expert_share = model.moe_layer_expert_params() / (layout.expert * layout.expert_tensor)
    body = dense_layers_per_stage * dense_layer + moe_layers_per_stage * moe_non_expert
    experts = moe_layers_per_stage * expert_share
    embedding = vocab * model.hidden_size / t
    first = body + embedding
    last = body + model.hidden_size + (embedding if (pp > 1 or not model.tied_embeddings) else 0)
    if pp == 1:
        last = body + embedding + model.hidden_size + (0 if model.tied_embeddings else embedding)
        first = last

    tokens = inputs.micro_batch_size * inputs.sequence_length / layout.context
    sp = t if layout.sequence_parallel else 1
    dense_act = _layer_activation_bytes(model, layout, tokens, moe=False)
    moe_act = _layer_activation_bytes(model, layout, tokens, moe=True) if model.is_moe else 0.0
    stage_act = dense_layers_per_stage * dense_act + moe_layers_per_stage * moe_act
    if inputs.recompute == "full":
        stage_act = layers_per_stage * 2 * tokens * model.hidden_size / sp
        recompute_peak = max(dense_act, moe_act)
    else:
        recompute_peak = 0.0
    in_flight = min(pp, inputs.num_microbatches)
    if layout.virtual_pipeline:
        in_flight *= 1 + (pp - 1) / (pp * layout.virtual_pipeline)
    logits = 6 * tokens * vocab / t

    candidates = {
        "first stage": (first, stage_act * in_flight + 2 * tokens * model.hidden_size / sp * in_flight),
        "last stage": (last, stage_act * 1 + logits),
    }
    if pp == 1:
        candidates = {"single stage": (first, stage_act + logits + 2 * tokens * model.hidden_size / sp)}
    dense_shards = layout.data * layout.context if layout.distributed_optimizer else 1
    expert_shards = layout.expert_data if layout.distributed_optimizer else 1

    best: MemoryEstimate | None = None
    for stage, (non_expert, activations) in candidates.items():
        training = {
            "weights (bf16)": 2 * (non_expert + experts),
            "gradients (fp32 main_grad)": 4 * (non_expert + experts),
            "optimizer (fp32 main + Adam)": 12 * non_expert / dense_shards + 12 * experts / expert_shards,
            f"activations (recompute={inputs.recompute})": activations + recompute_peak,
            "runtime overhead (assumed)": inputs.overhead_gib * GIB,
        }
        estimate = MemoryEstimate(
            stage=stage,
            params_per_gpu=int(non_expert + experts),
            expert_params_per_gpu=int(experts),
            training=training,
            gpu_memory_bytes=inputs.gpu_memory_gib * GIB,
        )
        if best is None or estimate.training_total > best.training_total:
            best = estimate
    assert best is not None
    if inputs.rollout_tensor:
        best.rollout = _rollout_memory(model, best, inputs)
    return best


def _rollout_memory(model: ModelShape, trained: MemoryEstimate, inputs: MemoryInputs) -> dict[str, float]:
    rollout_tp = inputs.rollout_tensor
    weights = 2 * model.total_params() / rollout_tp
    kv_heads_per_rank = math.ceil(model.num_kv_heads / rollout_tp)
    per_token = 2 * model.num_layers * kv_heads_per_rank * model.kv_channels * 2
    if inputs.offload_trainer_during_rollout:
        resident = 0.0
    else:
        resident = sum(
            value for key, value in trained.training.items() if not key.startswith(("activations", "runtime"))
        )
    budget = inputs.gpu_memory_utilization * inputs.gpu_memory_gib * GIB - weights
    kv_bytes = max(budget, 0.0)
    return {
        f"vLLM weights (bf16, TP {rollout_tp})": weights,
        "vLLM KV cache": kv_bytes,
        "trainer resident" + (" (offloaded)" if inputs.offload_trainer_during_rollout else ""): resident,
        "runtime overhead (assumed)": inputs.overhead_gib * GIB,
        "_kv_bytes_per_token": float(per_token),
        "_kv_tokens": kv_bytes // per_token,
        "_kv_budget": budget,
        "_vllm_weights": weights,
        "_vllm_claim": inputs.gpu_memory_utilization * inputs.gpu_memory_gib * GIB,
    }
