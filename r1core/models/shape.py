"""The few numbers of a decoder-only transformer that decide its parallel layout and memory.

A :class:`ModelShape` is read from a Hugging Face ``config.json`` (dense Llama/Qwen2-style
models and MoE models of the Qwen2-MoE/Qwen3-MoE/Mixtral/DeepSeek families), or taken from
a few built-in presets so layouts can be planned without any file. Attention is modelled as
grouped-query attention; multi-head latent attention (DeepSeek-V2/V3) is not modelled and
is refused rather than mis-estimated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a decoder-only transformer (names follow Megatron-Core where they exist)."""

    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    ffn_hidden_size: int
    """Intermediate size of the dense MLP (of the dense layers, in a MoE model)."""
    vocab_size: int
    head_dim: int = 0
    """Per-head width; 0 means hidden_size // num_attention_heads."""
    tied_embeddings: bool = False
    gated_mlp: bool = True
    """SwiGLU-style MLP with gate and up projections (3 matrices instead of 2)."""
    qkv_bias: bool = False
    qk_norm: bool = False
    """RMSNorm on each query and key head (Qwen3): 2 x head_dim parameters per layer."""
    num_experts: int = 0
    """Routed experts per MoE layer; 0 for a dense model."""
    moe_top_k: int = 0
    moe_ffn_hidden_size: int = 0
    shared_expert_ffn_hidden_size: int = 0
    """Total intermediate size of the shared expert(s) in each MoE layer (0: none)."""
    shared_expert_gate: bool = False
    """A (hidden -> 1) sigmoid gate on the shared expert output (Qwen2-MoE)."""
    num_dense_layers: int = 0
    """Leading layers of a MoE model that use the dense MLP (DeepSeek's first_k_dense)."""
    name: str = "model"

    @property
    def kv_channels(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    # -- parameter counts (unpadded vocabulary; see layout.padded_vocab_size) -------------
    def attention_params(self) -> int:
        """Q, K, V, output projections (+ QKV bias) and the attention-input norm, one layer."""
        query = self.num_attention_heads * self.kv_channels
        key_value = 2 * self.num_kv_heads * self.kv_channels
        bias = (query + key_value) if self.qkv_bias else 0
        norms = self.hidden_size + (2 * self.kv_channels if self.qk_norm else 0)
        return self.hidden_size * (query + key_value) + query * self.hidden_size + bias + norms

    def mlp_params(self, ffn_hidden_size: int) -> int:
        """One MLP of the given intermediate size (no norm)."""
        matrices = 3 if self.gated_mlp else 2
        return matrices * self.hidden_size * ffn_hidden_size

    def dense_layer_params(self) -> int:
        """One dense transformer layer: attention, MLP and both norms."""
        return self.attention_params() + self.mlp_params(self.ffn_hidden_size) + self.hidden_size

    def moe_layer_non_expert_params(self) -> int:
        """One MoE layer without its routed experts: attention, norms, router, shared expert."""
        shared = self.mlp_params(self.shared_expert_ffn_hidden_size)
        shared += self.hidden_size if self.shared_expert_gate else 0
        return self.attention_params() + self.hidden_size + self.hidden_size * self.num_experts + shared

    def moe_layer_expert_params(self) -> int:
        """The routed experts of one MoE layer."""
        return self.num_experts * self.mlp_params(self.moe_ffn_hidden_size)

    def embedding_params(self, vocab_size: int | None = None) -> int:
        """Input embedding; the output layer has as many again unless embeddings are tied."""
        return (vocab_size or self.vocab_size) * self.hidden_size

    def total_params(self) -> int:
        """All parameters (final norm and an untied output layer included)."""
        dense_layers = self.num_layers - self.num_moe_layers
        total = dense_layers * self.dense_layer_params()
        total += self.num_moe_layers * (self.moe_layer_non_expert_params() + self.moe_layer_expert_params())
        total += self.embedding_params() * (1 if self.tied_embeddings else 2) + self.hidden_size
        return total

    def active_params(self) -> int:
        """Parameters used per token (top-k of the routed experts)."""
        if not self.is_moe:
            return self.total_params()
        idle_experts = self.num_experts - self.moe_top_k
        unused = self.num_moe_layers * idle_experts * self.mlp_params(self.moe_ffn_hidden_size)
        return self.total_params() - unused


def _first(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def _count_dense_layers(config: dict[str, Any], num_layers: int) -> int:
    """Layers of a MoE model that use a dense MLP: DeepSeek's ``first_k_dense_replace``,
    Qwen-MoE's ``mlp_only_layers`` and ``decoder_sparse_step`` (every step-th layer is MoE)."""
    first_dense = int(config.get("first_k_dense_replace") or 0)
    mlp_only = set(config.get("mlp_only_layers") or [])
    step = int(config.get("decoder_sparse_step") or 1)
    return sum(
        1
        for index in range(num_layers)
        if index < first_dense or index in mlp_only or (index + 1) % step != 0
    )


def from_hf_config(path: str | os.PathLike[str]) -> ModelShape:
    """Read a ModelShape from a Hugging Face ``config.json`` (or the folder holding it).

    Raises:
        ValueError: the file lacks a required size, or uses multi-head latent attention.
    """
    source = Path(path)
    if source.is_dir():
        source = source / "config.json"
    if not source.is_file():
        raise FileNotFoundError(f"no Hugging Face config at {str(source)!r}")
    config = json.loads(source.read_text())
    if "text_config" in config and "hidden_size" not in config:  # multimodal wrappers
        config = config["text_config"]
    if config.get("kv_lora_rank"):
        raise ValueError(
            f"{source}: multi-head latent attention (kv_lora_rank) is not modelled by the planner"
        )
    required = {
        "hidden_size": _first(config, "hidden_size", "n_embd", "d_model"),
        "num_layers": _first(config, "num_hidden_layers", "n_layer", "num_layers"),
        "num_attention_heads": _first(config, "num_attention_heads", "n_head"),
        "vocab_size": _first(config, "vocab_size"),
    }
    missing = [name for name, value in required.items() if value is None]
    if missing:
        raise ValueError(f"{source}: cannot find {missing} in the Hugging Face config")
    heads = int(required["num_attention_heads"])
    num_experts = int(_first(config, "num_experts", "num_local_experts", "n_routed_experts", default=0) or 0)
    moe_ffn = int(_first(config, "moe_intermediate_size", default=0) or 0)
    ffn = int(_first(config, "intermediate_size", "ffn_hidden_size", "n_inner", default=0) or 0)
    if num_experts and not moe_ffn:  # Mixtral: experts use intermediate_size
        moe_ffn = ffn
    shared = int(config.get("shared_expert_intermediate_size") or 0)
    if not shared and config.get("n_shared_experts"):
        shared = int(config["n_shared_experts"]) * moe_ffn
    model_type = str(config.get("model_type", ""))
    qkv_bias = bool(_first(config, "attention_bias", "qkv_bias", default=model_type.startswith("qwen2")))
    activation = str(_first(config, "hidden_act", "activation_function", default="silu"))
    return ModelShape(
        hidden_size=int(required["hidden_size"]),
        num_layers=int(required["num_layers"]),
        num_attention_heads=heads,
        num_kv_heads=int(_first(config, "num_key_value_heads", default=heads)),
        ffn_hidden_size=ffn or 4 * int(required["hidden_size"]),
        vocab_size=int(required["vocab_size"]),
        head_dim=int(config.get("head_dim") or 0),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        gated_mlp=activation in ("silu", "swiglu", "swish"),
        qkv_bias=qkv_bias,
        qk_norm=model_type.startswith("qwen3"),
        num_experts=num_experts,
        moe_top_k=int(_first(config, "num_experts_per_tok", "moe_top_k", default=0) or 0),
        moe_ffn_hidden_size=moe_ffn,
        shared_expert_ffn_hidden_size=shared,
        shared_expert_gate=bool(shared) and model_type == "qwen2_moe",
        num_dense_layers=_count_dense_layers(config, int(required["num_layers"])) if num_experts else 0,
        name=str(config.get("_name_or_path") or source.parent.name or model_type or "model"),
    )


# Sizes published in each model's Hugging Face config.json.
PRESETS: dict[str, ModelShape] = {
    "qwen2.5-0.5b": ModelShape(896, 24, 14, 2, 4864, 151936, tied_embeddings=True, qkv_bias=True),
    "qwen2.5-1.5b": ModelShape(1536, 28, 12, 2, 8960, 151936, tied_embeddings=True, qkv_bias=True),
    "qwen2.5-7b": ModelShape(3584, 28, 28, 4, 18944, 152064, qkv_bias=True),
    "qwen2.5-32b": ModelShape(5120, 64, 40, 8, 27648, 152064, qkv_bias=True),
    "llama-3-8b": ModelShape(4096, 32, 32, 8, 14336, 128256),
    "llama-3-70b": ModelShape(8192, 80, 64, 8, 28672, 128256),
    "qwen3-30b-a3b": ModelShape(
        2048, 48, 32, 4, 6144, 151936, head_dim=128, qk_norm=True, num_experts=128, moe_top_k=8,
        moe_ffn_hidden_size=768,
    ),
}


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
