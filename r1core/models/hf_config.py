"""Hugging Face ``config.json`` -> :class:`~r1core.models.shape.ModelShape`, one parser per family.

The one parser of the project: launch planning (``r1core.launch``) and model building
(``r1core.models.policy``) both read a checkpoint's config through :func:`from_hf_config` /
:func:`parse_hf_config`. A family is registered with :func:`register_family`; anything a
family does not handle raises :class:`~r1core.models.shape.UnsupportedModelError` naming the
feature, so a checkpoint is refused rather than built wrong. Needs neither torch nor
megatron-core.

Families: ``llama`` (Llama 2/3, 3.1+ with ``llama3`` rope scaling), ``mistral``, ``mixtral``,
``qwen2``, ``qwen2_moe``, ``qwen3``, ``qwen3_moe``, ``deepseek_v3`` (multi-head latent
attention and DeepSeekMoE; its multi-token-prediction layers are dropped, see
:func:`_deepseek_v3`), ``gemma3_text`` and ``phi3``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from r1core.models.shape import PRESETS, LatentAttention, ModelShape, Rope, Router, UnsupportedModelError

FamilyParser = Callable[[dict[str, Any]], ModelShape]
_FAMILIES: dict[str, FamilyParser] = {}

#: Families refused with the reason (the feature the policy lacks).
_REFUSED = {
    "gemma2": "Gemma 2 needs attention-logit and final-logit soft-capping, which the policy's "
              "attention and fused log-prob head do not implement",
    "gemma3": "this is Gemma 3 with a vision tower (model_type 'gemma3'); text-only checkpoints "
              "(model_type 'gemma3_text', e.g. Gemma 3 1B) are supported",
    "deepseek_v2": "DeepSeek-V2 routes with group-limited greedy top-k on the group maximum, which "
                   "Megatron-Core's group-limited routing (sum of the top experts) does not reproduce",
    "phi3small": "Phi-3-small uses block-sparse attention and muP scaling",
}


def register_family(*model_types: str) -> Callable[[FamilyParser], FamilyParser]:
    """Register a parser from a Hugging Face config dict to :class:`ModelShape`."""

    def wrap(fn: FamilyParser) -> FamilyParser:
        for name in model_types:
            _FAMILIES[name] = fn
        return fn

    return wrap


def supported_model_types() -> list[str]:
    return sorted(_FAMILIES)


def load_hf_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The dict of a ``config.json`` (or of the folder holding one)."""
    source = Path(path)
    if source.is_dir():
        source = source / "config.json"
    if not source.is_file():
        raise FileNotFoundError(f"no Hugging Face config.json at {str(source)!r}")
    return json.loads(source.read_text())


def parse_hf_config(config: dict[str, Any], *, name: str | None = None) -> ModelShape:
    """The :class:`ModelShape` of a Hugging Face config dict.

    Raises:
        UnsupportedModelError: unknown ``model_type`` (the message lists the supported ones),
            or a feature of a known family the policy does not build (named).
        ValueError: a required size is missing.
    """
    model_type = config.get("model_type")
    if model_type in _REFUSED:
        raise UnsupportedModelError(f"model_type {model_type!r} is not supported: {_REFUSED[model_type]}")
    if model_type not in _FAMILIES:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(supported_model_types())}"
        )
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "?")
        raise UnsupportedModelError(f"quantized checkpoints are not supported (quantization_config: {method})")
    missing = [key for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
               if config.get(key) is None]
    if missing:
        raise ValueError(f"cannot find {missing} in the Hugging Face config of model_type {model_type!r}")
    shape = _FAMILIES[model_type](config)
    return replace(shape, name=name or str(config.get("_name_or_path") or model_type))


def from_hf_config(path: str | os.PathLike[str]) -> ModelShape:
    """Read a :class:`ModelShape` from a Hugging Face ``config.json`` (or the folder holding it)."""
    source = Path(path)
    return parse_hf_config(load_hf_config(source), name=(source if source.is_dir() else source.parent).name)


def load_model_shape(spec: str) -> ModelShape:
    """A preset name (``qwen2.5-7b``), a ``config.json`` path, or a folder holding one."""
    key = spec.lower()
    if key in PRESETS:
        return replace(PRESETS[key], name=key)
    if os.path.exists(spec):
        return from_hf_config(spec)
    raise ValueError(
        f"unknown model {spec!r}: give a Hugging Face config.json (or its folder) or one of "
        f"the presets {sorted(PRESETS)}"
    )


# ----------------------------------------------------------------------------- shared pieces


def _rope_dict(cfg: dict[str, Any]) -> dict[str, Any]:
    """transformers >= 5 keeps rope settings in ``rope_parameters``; older files use
    ``rope_theta`` and ``rope_scaling`` (with ``type`` or ``rope_type``)."""
    merged = {"rope_theta": cfg.get("rope_theta", 10000.0)}
    merged.update(cfg.get("rope_scaling") or {})
    merged.update(cfg.get("rope_parameters") or {})
    if "type" in merged and "rope_type" not in merged:
        merged["rope_type"] = merged["type"]
    if cfg.get("partial_rotary_factor") is not None:
        merged.setdefault("partial_rotary_factor", cfg["partial_rotary_factor"])
    return merged


def _rope(params: dict[str, Any], cfg: dict[str, Any], *, allowed: tuple[str, ...] = ("default", "llama3", "linear"),
          interleaved: bool = False) -> Rope:
    kind = params.get("rope_type") or "default"
    if kind not in allowed:
        hints = {"longrope": " (Phi-3 long-context LongRoPE)", "dynamic": " (dynamic NTK scaling)",
                 "yarn": " (YaRN; supported only with multi-head latent attention)"}
        raise UnsupportedModelError(
            f"rope_type {kind!r}{hints.get(kind, '')} is not supported for model_type "
            f"{cfg.get('model_type')!r}; supported: {', '.join(allowed)}"
        )
    original = params.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings") or 0
    return Rope(
        theta=float(params.get("rope_theta", 10000.0)),
        kind=kind,
        factor=float(params.get("factor", 1.0)),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(original),
        beta_fast=float(params.get("beta_fast") or 32.0),
        beta_slow=float(params.get("beta_slow") or 1.0),
        mscale=float(params.get("mscale") or 1.0),
        mscale_all_dim=float(params.get("mscale_all_dim") or 0.0),
        fraction=float(params.get("partial_rotary_factor", 1.0)),
        interleaved=interleaved,
    )


def _activation(cfg: dict[str, Any], allowed: dict[str, str]) -> str:
    name = cfg.get("hidden_activation") or cfg.get("hidden_act") or "silu"
    if name not in allowed:
        raise UnsupportedModelError(
            f"activation {name!r} is not supported for model_type {cfg.get('model_type')!r} "
            f"(supported: {', '.join(allowed)})"
        )
    return allowed[name]


_SILU = {"silu": "silu", "swish": "silu"}


def _dense(cfg: dict[str, Any], *, sliding_window: int = 0, **features: Any) -> dict[str, Any]:
    """Fields every family shares."""
    heads = int(cfg["num_attention_heads"])
    if cfg.get("mlp_bias"):
        raise UnsupportedModelError("MLP biases (mlp_bias=true) are not supported")
    return dict(
        hidden_size=int(cfg["hidden_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        ffn_hidden_size=int(cfg.get("intermediate_size") or 0),
        vocab_size=int(cfg["vocab_size"]),
        head_dim=int(cfg.get("head_dim") or 0),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        model_type=str(cfg["model_type"]),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
        sliding_window=int(sliding_window or 0),
        **features,
    )


def _attention_bias(cfg: dict[str, Any]) -> bool:
    """Llama-style ``attention_bias`` puts biases on q, k, v *and* o; Megatron-Core's attention
    has a q/k/v bias only (``add_qkv_bias``)."""
    if cfg.get("attention_bias"):
        raise UnsupportedModelError("attention_bias=true (a bias on o_proj) is not supported; only q/k/v biases are")
    return False


def _window(cfg: dict[str, Any]) -> int:
    return int(cfg.get("sliding_window") or 0)


# ----------------------------------------------------------------------------- families


@register_family("llama")
def _llama(cfg: dict[str, Any]) -> ModelShape:
    return ModelShape(**_dense(cfg, qkv_bias=_attention_bias(cfg), activation=_activation(cfg, _SILU),
                               rope=_rope(_rope_dict(cfg), cfg)))


@register_family("mistral")
def _mistral(cfg: dict[str, Any]) -> ModelShape:
    return ModelShape(**_dense(cfg, sliding_window=_window(cfg), activation=_activation(cfg, _SILU),
                               rope=_rope(_rope_dict(cfg), cfg)))


def _qwen_window(cfg: dict[str, Any]) -> int:
    if cfg.get("use_sliding_window"):
        raise UnsupportedModelError(
            "use_sliding_window=true (Qwen's sliding window on the layers past max_window_layers) "
            "is not supported"
        )
    return 0


@register_family("qwen2")
def _qwen2(cfg: dict[str, Any]) -> ModelShape:
    return ModelShape(**_dense(cfg, sliding_window=_qwen_window(cfg), qkv_bias=True,
                               activation=_activation(cfg, _SILU), rope=_rope(_rope_dict(cfg), cfg)))


@register_family("qwen3")
def _qwen3(cfg: dict[str, Any]) -> ModelShape:
    return ModelShape(**_dense(cfg, sliding_window=_qwen_window(cfg), qkv_bias=bool(cfg.get("attention_bias")),
                               qk_norm=True, activation=_activation(cfg, _SILU), rope=_rope(_rope_dict(cfg), cfg)))


def _sparse_layers(cfg: dict[str, Any]) -> tuple[bool, ...]:
    """Qwen-MoE: ``mlp_only_layers`` are dense, and only every ``decoder_sparse_step``-th layer
    is MoE."""
    step = int(cfg.get("decoder_sparse_step") or 1)
    dense = set(cfg.get("mlp_only_layers") or [])
    return tuple(i not in dense and (i + 1) % step == 0 for i in range(int(cfg["num_hidden_layers"])))


def _softmax_router(cfg: dict[str, Any]) -> Router:
    return Router(score_function="softmax", normalize_top_k=bool(cfg.get("norm_topk_prob", False)))


@register_family("qwen3_moe")
def _qwen3_moe(cfg: dict[str, Any]) -> ModelShape:
    # transformers 5 calls the expert count num_local_experts; 4.x files call it num_experts.
    return ModelShape(
        **_dense(cfg, sliding_window=_qwen_window(cfg), qkv_bias=bool(cfg.get("attention_bias")), qk_norm=True,
                 activation=_activation(cfg, _SILU), rope=_rope(_rope_dict(cfg), cfg)),
        num_experts=int(cfg.get("num_local_experts") or cfg["num_experts"]),
        moe_top_k=int(cfg["num_experts_per_tok"]),
        moe_ffn_hidden_size=int(cfg["moe_intermediate_size"]),
        moe_layers=_sparse_layers(cfg),
        router=_softmax_router(cfg),
    )


@register_family("qwen2_moe")
def _qwen2_moe(cfg: dict[str, Any]) -> ModelShape:
    shared = int(cfg.get("shared_expert_intermediate_size") or 0)
    return ModelShape(
        **_dense(cfg, sliding_window=_qwen_window(cfg), qkv_bias=True, activation=_activation(cfg, _SILU),
                 rope=_rope(_rope_dict(cfg), cfg)),
        num_experts=int(cfg.get("num_local_experts") or cfg["num_experts"]),
        moe_top_k=int(cfg["num_experts_per_tok"]),
        moe_ffn_hidden_size=int(cfg["moe_intermediate_size"]),
        shared_expert_ffn_hidden_size=shared,
        shared_expert_gate=bool(shared),
        moe_layers=_sparse_layers(cfg),
        router=_softmax_router(cfg),
    )


@register_family("mixtral")
def _mixtral(cfg: dict[str, Any]) -> ModelShape:
    if cfg.get("router_jitter_noise"):
        raise UnsupportedModelError(
            "router_jitter_noise > 0 (training-time noise on the MoE input) is not supported"
        )
    ffn = int(cfg["intermediate_size"])
    return ModelShape(
        **_dense(cfg, sliding_window=_window(cfg), activation=_activation(cfg, _SILU),
                 rope=_rope(_rope_dict(cfg), cfg)),
        num_experts=int(cfg["num_local_experts"]),
        moe_top_k=int(cfg["num_experts_per_tok"]),
        moe_ffn_hidden_size=ffn,
        router=Router(score_function="softmax", normalize_top_k=True),
    )


@register_family("deepseek_v3")
def _deepseek_v3(cfg: dict[str, Any]) -> ModelShape:
    """DeepSeek-V3 / R1: multi-head latent attention, DeepSeekMoE (shared experts, sigmoid
    scores with the correction bias, group-limited top-k, leading dense layers).

    Multi-token prediction (``num_nextn_predict_layers``) is dropped: the policy trains the main
    model only (RL needs no MTP loss), the checkpoint's MTP layers (``model.layers.N`` and above)
    are ignored at import and absent from the export.
    """
    if cfg.get("scoring_func", "sigmoid") != "sigmoid" or cfg.get("topk_method", "noaux_tc") != "noaux_tc":
        raise UnsupportedModelError(
            f"DeepSeek routing scoring_func={cfg.get('scoring_func')!r} topk_method={cfg.get('topk_method')!r} "
            "is not supported (only sigmoid with noaux_tc, as in DeepSeek-V3)"
        )
    top_k = int(cfg["num_experts_per_tok"])
    groups, group_top_k = int(cfg.get("n_group") or 1), int(cfg.get("topk_group") or 1)
    if groups > 1 and top_k // group_top_k != 2:
        # DeepSeek scores a group by the sum of its top-2 experts; Megatron-Core by the sum of its
        # top (top_k / group_top_k): the two agree only when that ratio is 2 (V3: 8 / 4).
        raise UnsupportedModelError(
            f"group-limited routing with num_experts_per_tok/topk_group = {top_k}/{group_top_k} != 2 is not "
            "supported (Megatron-Core scores a group by its top-(k/groups) experts, DeepSeek by its top 2)"
        )
    if not cfg.get("norm_topk_prob", True) and top_k > 1:
        raise UnsupportedModelError("norm_topk_prob=false with sigmoid routing is not supported")
    if int(cfg.get("moe_layer_freq") or 1) != 1:
        raise UnsupportedModelError("moe_layer_freq != 1 is not supported")
    num_layers = int(cfg["num_hidden_layers"])
    first_dense = int(cfg.get("first_k_dense_replace") or 0)
    moe_ffn = int(cfg["moe_intermediate_size"])
    rope_params = _rope_dict(cfg)
    q_lora = int(cfg.get("q_lora_rank") or 0)
    mla = LatentAttention(
        q_lora_rank=q_lora,
        kv_lora_rank=int(cfg["kv_lora_rank"]),
        qk_nope_head_dim=int(cfg["qk_nope_head_dim"]),
        qk_rope_head_dim=int(cfg["qk_rope_head_dim"]),
        v_head_dim=int(cfg["v_head_dim"]),
    )
    return ModelShape(
        **_dense(cfg, activation=_activation(cfg, _SILU),
                 rope=_rope(rope_params, cfg, allowed=("default", "yarn"),
                            interleaved=bool(cfg.get("rope_interleave", True)))),
        num_experts=int(cfg["n_routed_experts"]),
        moe_top_k=top_k,
        moe_ffn_hidden_size=moe_ffn,
        shared_expert_ffn_hidden_size=int(cfg.get("n_shared_experts") or 0) * moe_ffn,
        moe_layers=tuple(i >= first_dense for i in range(num_layers)),
        router=Router(score_function="sigmoid", normalize_top_k=True, expert_bias=True,
                      num_groups=groups if groups > 1 else 0, group_top_k=group_top_k if groups > 1 else 0,
                      scaling_factor=float(cfg.get("routed_scaling_factor") or 1.0)),
        latent_attention=mla,
    )


_GELU_TANH = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}


@register_family("gemma3_text")
def _gemma3_text(cfg: dict[str, Any]) -> ModelShape:
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if cfg.get(key):
            raise UnsupportedModelError(f"{key}={cfg[key]} (logit soft-capping) is not supported")
    if cfg.get("use_bidirectional_attention"):
        raise UnsupportedModelError("use_bidirectional_attention=true (EmbeddingGemma) is not supported")
    num_layers = int(cfg["num_hidden_layers"])
    layer_types = cfg.get("layer_types")
    if layer_types is None:  # files before transformers 4.53: every n-th layer is global
        pattern = int(cfg.get("sliding_window_pattern") or 6)
        layer_types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(num_layers)]
    unknown = set(layer_types) - {"full_attention", "sliding_attention"}
    if unknown:
        raise UnsupportedModelError(f"Gemma 3 layer types {sorted(unknown)} are not supported")
    params = cfg.get("rope_parameters") or {}
    if "full_attention" in params:  # transformers >= 5: one rope per layer type
        global_params = dict(params["full_attention"])
        local_params = dict(params.get("sliding_attention") or {"rope_theta": 10000.0})
    else:
        global_params = _rope_dict(cfg)
        local_params = {"rope_theta": cfg.get("rope_local_base_freq", 10000.0)}
    local_rope = _rope(local_params, cfg, allowed=("default",))
    return _gemma_shape(cfg, int(cfg["hidden_size"]), layer_types, global_params, local_rope)


def _gemma_shape(cfg: dict[str, Any], hidden: int, layer_types: list[str], global_params: dict[str, Any],
                 local_rope: Rope) -> ModelShape:
    fields = _dense(cfg, sliding_window=_window(cfg), qkv_bias=_attention_bias(cfg), qk_norm=True,
                    activation=_activation(cfg, _GELU_TANH),
                    rope=_rope(global_params, cfg, allowed=("default", "linear")))
    # Gemma's configs tie the embeddings unless they say otherwise.
    fields["tied_embeddings"] = bool(cfg.get("tie_word_embeddings", True))
    return ModelShape(
        **fields,
        local_rope=local_rope,
        window_layers=tuple(t == "sliding_attention" for t in layer_types),
        softmax_scale=float(cfg.get("query_pre_attn_scalar") or 256) ** -0.5,
        zero_centered_norms=True,
        sandwich_norms=True,
        embedding_scale=math.sqrt(hidden),
    )


@register_family("phi3")
def _phi3(cfg: dict[str, Any]) -> ModelShape:
    return ModelShape(**_dense(cfg, sliding_window=_window(cfg), qkv_bias=_attention_bias(cfg),
                               activation=_activation(cfg, _SILU), rope=_rope(_rope_dict(cfg), cfg)))
