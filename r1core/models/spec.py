"""Megatron-Core layer specs for the policy, built through a backend spec provider.

Two providers:

* :class:`TorchSpecProvider` -- Megatron's local modules (``ColumnParallelLinear``,
  ``RowParallelLinear``, torch norms, ``SequentialMLP`` experts), with a core attention that
  runs anywhere (:class:`SDPAttention`, ``torch.nn.functional.scaled_dot_product_attention``,
  packed ``thd`` sequences included) in place of ``DotProductAttention`` (which needs a CUDA
  memory buffer).
* Megatron's ``TESpecProvider`` when Transformer Engine is installed.

Family features come through the same slots: a zero-centred RMSNorm (Gemma), a sliding window
in :class:`SDPAttention`, a norm after the attention and MLP output projections (Gemma's
sandwich norms, :func:`with_post_norm`), a per-layer rope base (:class:`PolicySelfAttention`),
and Megatron's ``MLASelfAttention`` for latent attention (:class:`PolicyMLASelfAttention`).

MoE layers take their router from the spec's ``router`` slot: :class:`PolicyRouter` computes the
gate with a plain ``F.linear`` (the stock router moves its weight to CUDA) and carries a
:class:`r1core.models.routing_replay.LayerRoutingReplay` for recording/replaying expert choices.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from r1core._extras import require

require("megatron.core", extra="policy", feature="r1core.models")

from megatron.core.models.backends import BackendSpecProvider, LocalSpecProvider  # noqa: E402
from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec_for_backend  # noqa: E402
from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules  # noqa: E402
from megatron.core.transformer.enums import AttnMaskType  # noqa: E402
from megatron.core.transformer.identity_op import IdentityOp  # noqa: E402
from megatron.core.transformer.mlp import MLP, MLPSubmodules  # noqa: E402
from megatron.core.transformer.module import MegatronModule  # noqa: E402
from megatron.core.transformer.moe.router import TopKRouter  # noqa: E402
from megatron.core.transformer.multi_latent_attention import (  # noqa: E402
    MLASelfAttention,
    MLASelfAttentionSubmodules,
)
from megatron.core.transformer.spec_utils import ModuleSpec  # noqa: E402
from megatron.core.transformer.torch_norm import WrappedTorchNorm  # noqa: E402
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules  # noqa: E402
from megatron.core.transformer.transformer_config import TransformerConfig  # noqa: E402
from megatron.core.transformer.transformer_layer import (  # noqa: E402
    TransformerLayer,
    TransformerLayerSubmodules,
    get_transformer_layer_offset,
)
from megatron.core.transformer.utils import is_layer_window_attention  # noqa: E402
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add  # noqa: E402

from r1core.models.rotary import PolicyRotaryEmbedding, host_rotary_for_latent_attention  # noqa: E402

from r1core.models.moe import PolicyMoELayer  # noqa: E402
from r1core.models.routing_replay import LayerRoutingReplay  # noqa: E402


def transformer_engine_available() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # a broken TE install must not take the CPU path down with it
        return False
    return torch.cuda.is_available()


class SDPAttention(MegatronModule):
    """Causal core attention on ``torch.nn.functional.scaled_dot_product_attention``.

    Takes Megatron's layouts: ``sbhd`` query ``[s, b, heads_local, d]`` and key/value
    ``[s, b, groups_local, d]``, or packed ``thd`` (``[t, heads, d]`` with
    ``packed_seq_params.cu_seqlens_q``), where a block-diagonal causal mask keeps every sequence
    to itself. Returns ``[s, b, heads_local * d]`` (``[t, heads_local * d]`` for ``thd``).
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        cp_comm_type: Optional[str] = None,
        pg_collection: Any = None,
        **unused: Any,
    ) -> None:
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPAttention does not support context parallelism")
        if attn_mask_type not in (AttnMaskType.causal, AttnMaskType.padding_causal):
            raise ValueError(f"SDPAttention is causal only, got {attn_mask_type}")
        head_dim = unused.get("k_channels") or config.kv_channels
        if softmax_scale is None:
            softmax_scale = config.softmax_scale if config.softmax_scale is not None else head_dim**-0.5
        self.softmax_scale = softmax_scale
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        #: Keys a query sees, itself included (0: all earlier keys).
        self.window = (
            config.window_size[0] + 1
            if is_layer_window_attention(config.window_size, config.window_attn_skip_freq, layer_number)
            else 0
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[torch.Tensor] = None,
        packed_seq_params: Any = None,
    ) -> torch.Tensor:
        if attention_bias is not None:
            raise ValueError("SDPAttention does not take an attention bias")
        dropout = self.dropout if self.training else 0.0
        if packed_seq_params is not None and packed_seq_params.qkv_format == "thd":
            return _packed_causal_attention(
                query, key, value, packed_seq_params.cu_seqlens_q, dropout=dropout, scale=self.softmax_scale,
                window=self.window,
            )
        if attention_mask is not None:
            raise ValueError("SDPAttention builds its own causal mask; pass attention_mask=None")
        seq, batch = query.shape[:2]
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))
        out = _causal_sdpa(q, k, v, dropout=dropout, scale=self.softmax_scale, window=self.window)
        return out.permute(2, 0, 1, 3).reshape(seq, batch, -1)


def _causal_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, dropout: float, scale: float,
                 window: int) -> torch.Tensor:
    """Causal SDPA on ``[n, heads, s, d]``; with ``window`` a query at ``i`` sees keys
    ``i - window < j <= i``."""
    mask, causal = None, True
    if window:
        positions = torch.arange(q.shape[2], device=q.device)
        distance = positions[:, None] - positions[None, :]
        mask, causal = (distance >= 0) & (distance < window), False
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout, scale=scale,
        enable_gqa=q.shape[1] != k.shape[1],
    )


def _packed_causal_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor, *,
    dropout: float, scale: float, window: int = 0,
) -> torch.Tensor:
    """Causal attention over packed sequences, each attending only to itself.

    query ``[t, heads, d]``, key/value ``[t, groups, d]``, ``cu_seqlens`` int ``[n + 1]``;
    returns ``[t, heads * d]``. The sequences are scattered into a right-padded
    ``[n, heads, s_max, d]`` block and run with ``is_causal=True``: a valid query at position
    ``i`` only sees keys ``j <= i`` of its own row, so the padding needs no mask (padded query
    rows are computed and dropped). Cost ``n * s_max**2`` instead of the ``t**2`` of one
    block-diagonal mask over the whole pack, and no ``[t, t]`` mask is ever built.
    """
    total = query.shape[0]
    cu = cu_seqlens.to(query.device, torch.long)
    lengths = cu[1:] - cu[:-1]
    count = lengths.numel()
    longest = int(lengths.max())  # host sync: the padded width
    tokens = torch.arange(total, device=query.device)
    row = torch.repeat_interleave(torch.arange(count, device=query.device), lengths, output_size=total)
    column = tokens - cu[:-1][row]

    def padded(x: torch.Tensor) -> torch.Tensor:
        block = x.new_zeros(count, longest, *x.shape[1:])
        block[row, column] = x
        return block.transpose(1, 2)  # [n, heads, s_max, d]

    out = _causal_sdpa(padded(query), padded(key), padded(value), dropout=dropout, scale=scale, window=window)
    return out.transpose(1, 2)[row, column].reshape(total, -1)


class ZeroCenteredRMSNorm(torch.nn.Module):
    """RMSNorm whose weight is stored as ``gamma - 1`` (Megatron's
    ``layernorm_zero_centered_gamma``; Gemma's checkpoints). Computed in fp32 and cast back,
    as Gemma's reference does."""

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-6, **unused: Any) -> None:
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.zeros(hidden_size, dtype=config.params_dtype))
        self.weight.sequence_parallel = config.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


class TorchSpecProvider(LocalSpecProvider):
    """Megatron's local modules with :class:`SDPAttention` as the core attention and torch's
    RMSNorm (works on CPU and on CUDA without Apex or Transformer Engine)."""

    def __init__(self, zero_centered_norms: bool = False) -> None:
        super().__init__()
        self.zero_centered_norms = zero_centered_norms

    def layer_norm(self, rms_norm: bool = False, for_qk: bool = False) -> type:
        return ZeroCenteredRMSNorm if self.zero_centered_norms else WrappedTorchNorm

    def core_attention(self) -> type:
        return SDPAttention


def with_post_norm(linear: type, norm: type) -> type:
    """``linear`` (a row-parallel output projection) followed by ``norm`` on its output, before
    the residual add: Gemma's norms after attention and after the MLP. The output is complete
    on every rank (the row-parallel reduction is done), so the norm needs no communication."""

    class PostNormLinear(linear):  # type: ignore[misc, valid-type]
        def __init__(self, input_size: int, output_size: int, *args: Any, config: TransformerConfig,
                     **kwargs: Any) -> None:
            super().__init__(input_size, output_size, *args, config=config, **kwargs)
            self.post_layernorm = norm(config=config, hidden_size=output_size, eps=config.layernorm_epsilon)

        def forward(self, *args: Any, **kwargs: Any):
            output, bias = super().forward(*args, **kwargs)
            if bias is not None:
                output, bias = output + bias, None
            return self.post_layernorm(output), bias

    PostNormLinear.__name__ = PostNormLinear.__qualname__ = f"PostNorm{linear.__name__}"
    return PostNormLinear


class PolicySelfAttention(SelfAttention):
    """Megatron's ``SelfAttention``; with ``rope`` its layer uses its own rotary table instead of
    the model's (Gemma 3's sliding-window layers rotate with another base)."""

    def __init__(self, config: TransformerConfig, submodules: SelfAttentionSubmodules, layer_number: int,
                 attn_mask_type: AttnMaskType = AttnMaskType.causal, rope: Any = None, **kwargs: Any) -> None:
        super().__init__(config=config, submodules=submodules, layer_number=layer_number,
                         attn_mask_type=attn_mask_type, **kwargs)
        self.layer_rotary = None
        if rope is not None:
            self.layer_rotary = PolicyRotaryEmbedding(rope, config.kv_channels,
                                                      rotary_interleaved=config.rotary_interleaved)

    def forward(self, *args: Any, rotary_pos_emb: Any = None, **kwargs: Any):
        if self.layer_rotary is not None and rotary_pos_emb is not None:
            rotary_pos_emb = self.layer_rotary(rotary_pos_emb.shape[0])
        return super().forward(*args, rotary_pos_emb=rotary_pos_emb, **kwargs)


class PolicyMLASelfAttention(MLASelfAttention):
    """Megatron's ``MLASelfAttention``; without CUDA its rotary table is computed on the host
    (the stock one is built on, or moved to, the current CUDA device)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not torch.cuda.is_available():
            self.rotary_pos_emb = host_rotary_for_latent_attention(self.config, self.pg_collection.cp)


class PolicyRouter(TopKRouter):
    """Top-k router whose gate is a plain ``F.linear`` in the router dtype, with per-layer
    routing record/replay. Everything else (score function, expert bias, group-limited top-k,
    scaling, renormalisation) is Megatron's ``TopKRouter``.

    The expert bias (DeepSeek-V3's correction bias) is a checkpoint value here: Megatron
    allocates it with ``torch.cuda.current_device()``, so without CUDA it is registered on the
    host after the parent constructor ran without it.
    """

    def __init__(self, config: TransformerConfig, pg_collection: Any = None) -> None:
        host_bias = config.moe_router_enable_expert_bias and not torch.cuda.is_available()
        if host_bias:
            config.moe_router_enable_expert_bias = False
        try:
            super().__init__(config=config, pg_collection=pg_collection)
        finally:
            if host_bias:
                config.moe_router_enable_expert_bias = True
        if host_bias:
            self.enable_expert_bias = True
            self.register_buffer("local_tokens_per_expert", torch.zeros(config.num_moe_experts), persistent=False)
            self.register_buffer("expert_bias", torch.zeros(config.num_moe_experts))
        # Megatron's replay hook: topk_routing_with_score_function calls
        # router_replay.get_replay_topk(...) when it is set.
        self.router_replay = LayerRoutingReplay()

    def gating(self, input: torch.Tensor) -> torch.Tensor:
        router_dtype = {"fp32": torch.float32, "fp64": torch.float64}.get(
            self.config.moe_router_dtype, input.dtype
        )
        bias = None if self.bias is None else self.bias.to(router_dtype)
        return F.linear(input.to(router_dtype), self.weight.to(router_dtype), bias)


def select_backend(use_transformer_engine: bool | None = None, *,
                   zero_centered_norms: bool = False) -> BackendSpecProvider:
    """TE's provider where Transformer Engine (and CUDA) is available, else the torch one."""
    if use_transformer_engine is None:
        use_transformer_engine = transformer_engine_available()
    if use_transformer_engine:
        from megatron.core.extensions.transformer_engine_spec_provider import TESpecProvider

        return TESpecProvider()
    return TorchSpecProvider(zero_centered_norms=zero_centered_norms)


def _attention_spec(backend: BackendSpecProvider, config: TransformerConfig, rope: Any,
                    sandwich_norms: bool) -> ModuleSpec:
    fused_norm = backend.fuse_layernorm_and_linear()
    qk_norm = backend.layer_norm(rms_norm=True, for_qk=True)
    proj = backend.row_parallel_linear()
    if getattr(config, "multi_latent_attention", False):
        up_proj = backend.column_parallel_layer_norm_linear() if fused_norm else backend.column_parallel_linear()
        down_proj = backend.linear() if fused_norm else backend.column_parallel_linear()
        return ModuleSpec(
            module=PolicyMLASelfAttention,
            params={"attn_mask_type": AttnMaskType.causal},
            submodules=MLASelfAttentionSubmodules(
                linear_q_proj=backend.column_parallel_linear(),
                linear_q_down_proj=down_proj,
                linear_q_up_proj=up_proj,
                linear_kv_down_proj=down_proj,
                linear_kv_up_proj=up_proj,
                core_attention=backend.core_attention(),
                linear_proj=proj,
                q_layernorm=IdentityOp if fused_norm else qk_norm,
                kv_layernorm=IdentityOp if fused_norm else qk_norm,
            ),
        )
    if sandwich_norms:
        proj = with_post_norm(proj, backend.layer_norm(rms_norm=True, for_qk=False))
    qkv = backend.column_parallel_layer_norm_linear() if fused_norm else backend.column_parallel_linear()
    return ModuleSpec(
        module=PolicySelfAttention,
        params={"attn_mask_type": AttnMaskType.causal, "rope": rope},
        submodules=SelfAttentionSubmodules(
            linear_qkv=qkv,
            core_attention=backend.core_attention(),
            linear_proj=proj,
            q_layernorm=qk_norm if config.qk_layernorm else IdentityOp,
            k_layernorm=qk_norm if config.qk_layernorm else IdentityOp,
        ),
    )


def layer_spec(backend: BackendSpecProvider, config: TransformerConfig, moe: bool, *,
               rope: Any = None, sandwich_norms: bool = False) -> ModuleSpec:
    """One decoder layer: pre-norm self-attention, pre-norm MLP (dense or MoE). ``rope``: this
    layer's own rotary settings, if they differ from the model's; ``sandwich_norms``: a norm on
    the attention and MLP outputs too (Gemma)."""
    if sandwich_norms and moe:
        raise ValueError("norms after a MoE layer's output are not supported")
    fused_norm = backend.fuse_layernorm_and_linear()
    norm = backend.layer_norm(rms_norm=True, for_qk=False)
    if moe:
        mlp = get_moe_module_spec_for_backend(
            backend=backend, num_experts=config.num_moe_experts, moe_grouped_gemm=config.moe_grouped_gemm,
        )
        mlp.module = PolicyMoELayer
        mlp.submodules.router = PolicyRouter
        pre_mlp_norm = norm
    else:
        fc1 = backend.column_parallel_layer_norm_linear() if fused_norm else backend.column_parallel_linear()
        fc2 = backend.row_parallel_linear()
        if sandwich_norms:
            fc2 = with_post_norm(fc2, norm)
        mlp = ModuleSpec(module=MLP, submodules=MLPSubmodules(linear_fc1=fc1, linear_fc2=fc2))
        pre_mlp_norm = IdentityOp if fused_norm else norm
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=IdentityOp if fused_norm else norm,
            self_attention=_attention_spec(backend, config, rope, sandwich_norms),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=pre_mlp_norm,
            mlp=mlp,
            mlp_bda=get_bias_dropout_add,
        ),
    )


def decoder_block_spec(
    config: TransformerConfig,
    backend: BackendSpecProvider,
    *,
    layer_ropes: list[Any] | None = None,
    sandwich_norms: bool = False,
    pp_rank: int | None = None,
) -> TransformerBlockSubmodules:
    """Layer specs of this pipeline stage (dense or MoE per ``config.moe_layer_freq``).

    ``layer_ropes``: per layer, its own rotary settings or None (the model's).
    """
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    if config.num_moe_experts:
        pattern = config.moe_layer_freq
        if isinstance(pattern, int):
            pattern = [int(i % pattern == 0) for i in range(config.num_layers)]
    else:
        pattern = [0] * config.num_layers
    ropes = layer_ropes or [None] * config.num_layers
    cache: dict[tuple[int, int], ModuleSpec] = {}
    specs = []
    for index, moe in enumerate(pattern):
        key = (int(moe), id(ropes[index]))
        if key not in cache:
            cache[key] = layer_spec(backend, config, bool(moe), rope=ropes[index], sandwich_norms=sandwich_norms)
        specs.append(cache[key])
    offset = get_transformer_layer_offset(config, pp_rank=pp_rank)
    count = get_num_layers_to_build(config, pp_rank=pp_rank)
    return TransformerBlockSubmodules(
        layer_specs=specs[offset : offset + count],
        layer_norm=backend.layer_norm(rms_norm=True, for_qk=False),
    )
