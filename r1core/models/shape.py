"""One record of a decoder-only transformer: its sizes and the features that build it.

:class:`ModelShape` is what both launch planning (parameter counts, memory, layout rules) and
model building (Megatron-Core's ``TransformerConfig``, the layer specs, the weight names) read.
It is made from a Hugging Face ``config.json`` by :mod:`r1core.models.hf_config`, one parser per
family, or taken from a few built-in presets so layouts can be planned without any file.
Importing it needs neither torch nor megatron-core.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class UnsupportedModelError(ValueError):
    """The checkpoint's ``model_type``, or one of its features, is not supported; the message
    names the feature."""


@dataclass(frozen=True)
class Rope:
    """Rotary position embedding of one kind of attention layer.

    theta: rotary base. kind: ``default``, ``llama3`` (Llama 3.1+ frequency scaling),
    ``yarn`` (DeepSeek-V3), ``linear`` (positions divided by ``factor``).
    fraction: share of each head's dimensions that rotate (Megatron's ``rotary_percent``).
    interleaved: rotation pairs are adjacent dimensions (DeepSeek's MLA) instead of halves.
    """

    theta: float = 10000.0
    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 0.0
    fraction: float = 1.0
    interleaved: bool = False


@dataclass(frozen=True)
class Router:
    """How a MoE layer picks its experts.

    score_function: ``softmax`` or ``sigmoid`` (DeepSeek-V3).
    normalize_top_k: the chosen experts' weights are renormalised to sum to one.
    expert_bias: a per-expert bias (DeepSeek-V3's ``e_score_correction_bias``) added to the
        scores for choosing only, never to the weights.
    num_groups, group_top_k: group-limited routing (experts in ``num_groups`` groups, only the
        best ``group_top_k`` groups are eligible); 0 when off.
    scaling_factor: multiplies the routing weights (DeepSeek's ``routed_scaling_factor``).
    """

    score_function: str = "softmax"
    normalize_top_k: bool = True
    expert_bias: bool = False
    num_groups: int = 0
    group_top_k: int = 0
    scaling_factor: float = 1.0


@dataclass(frozen=True)
class LatentAttention:
    """Multi-head latent attention (DeepSeek-V2/V3). ``q_lora_rank`` 0: queries are not
    compressed."""

    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True)
class ModelShape:
    """Sizes and features of a decoder-only transformer (names follow Megatron-Core where
    they exist). The first six fields are positional."""

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
    """RMSNorm on each query and key head (Qwen3, Gemma 3): 2 x head_dim parameters per layer."""
    num_experts: int = 0
    """Routed experts per MoE layer; 0 for a dense model."""
    moe_top_k: int = 0
    moe_ffn_hidden_size: int = 0
    shared_expert_ffn_hidden_size: int = 0
    """Total intermediate size of the shared expert(s) in each MoE layer (0: none)."""
    shared_expert_gate: bool = False
    """A (hidden -> 1) sigmoid gate on the shared expert output (Qwen2-MoE)."""
    moe_layers: tuple[bool, ...] = ()
    """Per layer, True where the MLP is MoE; empty means every layer (of a MoE model)."""
    name: str = "model"

    # -- what building the model needs beyond the sizes ---------------------------------
    model_type: str = ""
    """Hugging Face ``model_type``; selects the checkpoint names (``checkpoint_names``)."""
    norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    activation: str = "silu"
    """MLP activation: ``silu`` or ``gelu_tanh``."""
    rope: Rope = field(default_factory=Rope)
    local_rope: Rope | None = None
    """Rope of the sliding-window layers when it differs (Gemma 3)."""
    sliding_window: int = 0
    """Each query attends to at most this many keys (itself included); 0: full attention."""
    window_layers: tuple[bool, ...] = ()
    """Per layer, True where ``sliding_window`` applies; empty means every layer."""
    router: Router = field(default_factory=Router)
    latent_attention: LatentAttention | None = None
    softmax_scale: float | None = None
    """Attention score scale; None means 1 / sqrt(head_dim)."""
    zero_centered_norms: bool = False
    """RMSNorm weights are stored as ``gamma - 1`` (Gemma): the norm multiplies by ``1 + w``."""
    sandwich_norms: bool = False
    """Norms after attention and after the MLP too (Gemma 2/3: four norms per layer)."""
    embedding_scale: float = 1.0
    """Input embeddings are multiplied by this (Gemma: sqrt(hidden_size))."""

    @property
    def kv_channels(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def moe_layer_pattern(self) -> list[int]:
        """One entry per layer: 1 for MoE, 0 for dense."""
        if not self.is_moe:
            return [0] * self.num_layers
        return [int(x) for x in self.moe_layers] if self.moe_layers else [1] * self.num_layers

    @property
    def num_moe_layers(self) -> int:
        return sum(self.moe_layer_pattern)

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    def is_window_layer(self, layer: int) -> bool:
        """Whether 0-based ``layer`` uses sliding-window attention."""
        if not self.sliding_window:
            return False
        return self.window_layers[layer] if self.window_layers else True

    # -- parameter counts (unpadded vocabulary; see layout.padded_vocab_size) -------------
    def attention_params(self) -> int:
        """Attention projections (+ biases), their norms and the attention-input norm, one layer."""
        norms = self.hidden_size * (2 if self.sandwich_norms else 1)
        mla = self.latent_attention
        if mla is not None:
            heads = self.num_attention_heads
            query = (
                self.hidden_size * mla.q_lora_rank + mla.q_lora_rank + mla.q_lora_rank * heads * mla.qk_head_dim
                if mla.q_lora_rank else self.hidden_size * heads * mla.qk_head_dim
            )
            key_value = self.hidden_size * (mla.kv_lora_rank + mla.qk_rope_head_dim) + mla.kv_lora_rank
            key_value += mla.kv_lora_rank * heads * (mla.qk_nope_head_dim + mla.v_head_dim)
            return query + key_value + heads * mla.v_head_dim * self.hidden_size + norms
        query = self.num_attention_heads * self.kv_channels
        key_value = 2 * self.num_kv_heads * self.kv_channels
        bias = (query + key_value) if self.qkv_bias else 0
        norms += 2 * self.kv_channels if self.qk_norm else 0
        return self.hidden_size * (query + key_value) + query * self.hidden_size + bias + norms

    def mlp_params(self, ffn_hidden_size: int) -> int:
        """One MLP of the given intermediate size (no norm)."""
        matrices = 3 if self.gated_mlp else 2
        return matrices * self.hidden_size * ffn_hidden_size

    def _mlp_norms(self) -> int:
        return self.hidden_size * (2 if self.sandwich_norms else 1)

    def dense_layer_params(self) -> int:
        """One dense transformer layer: attention, MLP and all norms."""
        return self.attention_params() + self.mlp_params(self.ffn_hidden_size) + self._mlp_norms()

    def moe_layer_non_expert_params(self) -> int:
        """One MoE layer without its routed experts: attention, norms, router, shared expert."""
        shared = self.mlp_params(self.shared_expert_ffn_hidden_size)
        shared += self.hidden_size if self.shared_expert_gate else 0
        return self.attention_params() + self._mlp_norms() + self.hidden_size * self.num_experts + shared

    def moe_layer_expert_params(self) -> int:
        """The routed experts of one MoE layer."""
        return self.num_experts * self.mlp_params(self.moe_ffn_hidden_size)

    def embedding_params(self, vocab_size: int | None = None) -> int:
        """Input embedding; the output layer has as many again unless embeddings are tied."""
        return (vocab_size or self.vocab_size) * self.hidden_size

    def total_params(self) -> int:
        """All parameters (final norm and an untied output layer included)."""
        total = self.num_dense_layers * self.dense_layer_params()
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


# Sizes published in each model's Hugging Face config.json.
PRESETS: dict[str, ModelShape] = {
    "qwen2.5-0.5b": ModelShape(896, 24, 14, 2, 4864, 151936, tied_embeddings=True, qkv_bias=True,
                               model_type="qwen2"),
    "qwen2.5-1.5b": ModelShape(1536, 28, 12, 2, 8960, 151936, tied_embeddings=True, qkv_bias=True,
                               model_type="qwen2"),
    "qwen2.5-7b": ModelShape(3584, 28, 28, 4, 18944, 152064, qkv_bias=True, model_type="qwen2"),
    "qwen2.5-32b": ModelShape(5120, 64, 40, 8, 27648, 152064, qkv_bias=True, model_type="qwen2"),
    "llama-3-8b": ModelShape(4096, 32, 32, 8, 14336, 128256, model_type="llama"),
    "llama-3-70b": ModelShape(8192, 80, 64, 8, 28672, 128256, model_type="llama"),
    "qwen3-30b-a3b": ModelShape(
        2048, 48, 32, 4, 6144, 151936, head_dim=128, qk_norm=True, num_experts=128, moe_top_k=8,
        moe_ffn_hidden_size=768, model_type="qwen3_moe",
    ),
}
