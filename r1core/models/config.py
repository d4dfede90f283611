"""Hugging Face ``config.json`` -> the model's shape -> Megatron-Core ``TransformerConfig``.

:class:`ModelSpec` is the family-independent description of a decoder-only transformer that the
rest of ``r1core.models`` works from. Families are registered with
:func:`register_family`; each maps a Hugging Face config dict to a :class:`ModelSpec`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

FamilyParser = Callable[[dict[str, Any]], "ModelSpec"]
_FAMILIES: dict[str, FamilyParser] = {}


class UnsupportedModelError(ValueError):
    """The checkpoint's ``model_type`` (or one of its options) is not supported."""


@dataclass
class ModelSpec:
    """Shape and options of a decoder-only transformer, independent of the source format.

    model_type: Hugging Face ``model_type`` (``qwen2``, ``qwen3``, ``qwen3_moe``, ``llama``).
    vocab_size: true vocabulary size (the checkpoint's embedding rows).
    hidden_size, num_layers, num_attention_heads: usual meanings.
    num_query_groups: key/value heads (grouped-query attention).
    head_dim: per-head size (``kv_channels`` in Megatron).
    ffn_hidden_size: dense MLP width (None if every layer is MoE).
    norm_eps: RMSNorm epsilon.
    rope_theta: rotary base.
    max_position_embeddings: longest position the rotary table is built for.
    qkv_bias: q/k/v projections have biases (Qwen2). o_proj and MLP never do here.
    qk_norm: RMSNorm on each head's queries and keys (Qwen3).
    tie_word_embeddings: the output layer reuses the input embedding.
    num_experts, moe_top_k, moe_ffn_hidden_size: MoE shape (num_experts=0: dense model).
    moe_norm_top_k_prob: renormalise the chosen experts' probabilities to sum to one.
    moe_layer_pattern: one entry per layer, 1 for MoE, 0 for dense.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_query_groups: int
    head_dim: int
    ffn_hidden_size: int | None
    norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_word_embeddings: bool = False
    num_experts: int = 0
    moe_top_k: int = 0
    moe_ffn_hidden_size: int | None = None
    moe_norm_top_k_prob: bool = True
    moe_layer_pattern: list[int] = field(default_factory=list)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0


def register_family(*model_types: str) -> Callable[[FamilyParser], FamilyParser]:
    """Register a parser from a Hugging Face config dict to :class:`ModelSpec`."""

    def wrap(fn: FamilyParser) -> FamilyParser:
        for name in model_types:
            _FAMILIES[name] = fn
        return fn

    return wrap


def supported_model_types() -> list[str]:
    return sorted(_FAMILIES)


def load_hf_config(hf_dir: str | Path) -> dict[str, Any]:
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no Hugging Face config.json in {hf_dir}")
    return json.loads(path.read_text())


def model_spec_from_hf(hf_config: dict[str, Any]) -> ModelSpec:
    """Parse a Hugging Face config dict; raises :class:`UnsupportedModelError` naming the
    supported families."""
    model_type = hf_config.get("model_type")
    if model_type not in _FAMILIES:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(supported_model_types())}"
        )
    return _FAMILIES[model_type](hf_config)


def _rope_theta(cfg: dict[str, Any]) -> float:
    # transformers >= 5 nests rope settings under rope_parameters; older files keep rope_theta.
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    rope_type = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type not in (None, "default"):
        raise UnsupportedModelError(f"rope_type {rope_type!r} is not supported (only 'default')")
    return float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def _common(cfg: dict[str, Any]) -> dict[str, Any]:
    if cfg.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"hidden_act {cfg.get('hidden_act')!r} is not supported (only silu)")
    if cfg.get("use_sliding_window", False):
        raise UnsupportedModelError("sliding-window attention is not supported")
    heads = cfg["num_attention_heads"]
    return dict(
        model_type=cfg["model_type"],
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_query_groups=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        ffn_hidden_size=cfg.get("intermediate_size"),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=_rope_theta(cfg),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )


@register_family("qwen2")
def _qwen2(cfg: dict[str, Any]) -> ModelSpec:
    return ModelSpec(**_common(cfg), qkv_bias=True)


@register_family("llama")
def _llama(cfg: dict[str, Any]) -> ModelSpec:
    if cfg.get("mlp_bias", False):
        raise UnsupportedModelError("llama with mlp_bias=True is not supported")
    return ModelSpec(**_common(cfg), qkv_bias=bool(cfg.get("attention_bias", False)))


@register_family("qwen3")
def _qwen3(cfg: dict[str, Any]) -> ModelSpec:
    return ModelSpec(**_common(cfg), qkv_bias=bool(cfg.get("attention_bias", False)), qk_norm=True)


@register_family("qwen3_moe")
def _qwen3_moe(cfg: dict[str, Any]) -> ModelSpec:
    # transformers 5 calls the expert count num_local_experts; 4.x files call it num_experts.
    num_experts = cfg.get("num_local_experts") or cfg.get("num_experts")
    step = int(cfg.get("decoder_sparse_step", 1))
    dense_layers = set(cfg.get("mlp_only_layers") or [])
    pattern = [
        0 if (i in dense_layers or (i + 1) % step) else 1 for i in range(cfg["num_hidden_layers"])
    ]
    return ModelSpec(
        **_common(cfg),
        qkv_bias=bool(cfg.get("attention_bias", False)),
        qk_norm=True,
        num_experts=int(num_experts),
        moe_top_k=int(cfg["num_experts_per_tok"]),
        moe_ffn_hidden_size=int(cfg["moe_intermediate_size"]),
        moe_norm_top_k_prob=bool(cfg.get("norm_topk_prob", False)),
        moe_layer_pattern=pattern,
    )


def transformer_config(
    spec: ModelSpec,
    parallel: Any,
    *,
    dtype: torch.dtype,
    token_dispatcher: str | None = None,
    recompute: bool = False,
    extra: dict[str, Any] | None = None,
):
    """Build Megatron's ``TransformerConfig`` for ``spec`` under the layout ``parallel``
    (a :class:`r1core.parallel.ParallelConfig`).

    Fusions that need Apex/TE/CUDA are off; the checkpoint supplies every weight, so Megatron's
    random initialisation is skipped.
    """
    from megatron.core.transformer.transformer_config import TransformerConfig

    on_cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = dict(
        num_layers=spec.num_layers,
        hidden_size=spec.hidden_size,
        num_attention_heads=spec.num_attention_heads,
        num_query_groups=spec.num_query_groups,
        kv_channels=spec.head_dim,
        ffn_hidden_size=spec.ffn_hidden_size or spec.moe_ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=spec.norm_eps,
        add_bias_linear=False,
        add_qkv_bias=spec.qkv_bias,
        qk_layernorm=spec.qk_norm,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu_initialization=not on_cuda,
        perform_initialization=False,
        tensor_model_parallel_size=parallel.tensor,
        pipeline_model_parallel_size=parallel.pipeline,
        expert_model_parallel_size=parallel.expert,
        expert_tensor_parallel_size=parallel.expert_tensor_size,
        sequence_parallel=parallel.sequence_parallel,
        deallocate_pipeline_outputs=False,
    )
    if recompute:
        kwargs.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    if spec.is_moe:
        kwargs.update(
            num_moe_experts=spec.num_experts,
            moe_router_topk=spec.moe_top_k,
            moe_ffn_hidden_size=spec.moe_ffn_hidden_size,
            moe_layer_freq=list(spec.moe_layer_pattern),
            # Softmax over all experts, then top-k (the Qwen-MoE order) is pre-softmax; with
            # renormalisation the result equals softmax over the chosen logits (post-softmax).
            moe_router_pre_softmax=not spec.moe_norm_top_k_prob,
            moe_router_dtype="fp32",
            moe_router_load_balancing_type="none",
            moe_aux_loss_coeff=0.0,
            # alltoall creates a CUDA stream at construction; on CPU the all-gather dispatcher
            # (with the gloo collectives of r1core.models.moe) is used.
            moe_token_dispatcher_type=token_dispatcher or ("alltoall" if on_cuda else "allgather"),
            moe_grouped_gemm=False,
            moe_permute_fusion=False,
        )
    # Pipeline schedules exchange shapes per micro-batch (sequences differ in length); Megatron
    # forbids that flag with the all-gather dispatcher, which the CPU path uses.
    # (Dense models build no dispatcher; naming alltoall only lifts that restriction.)
    kwargs.setdefault("moe_token_dispatcher_type", "alltoall")
    kwargs["variable_seq_lengths"] = kwargs["moe_token_dispatcher_type"] != "allgather"
    kwargs.update(extra or {})
    return TransformerConfig(**kwargs)
