"""Megatron-Core layer specs for the policy, built through a backend spec provider.

Two providers:

* :class:`TorchSpecProvider` -- Megatron's local modules (``ColumnParallelLinear``,
  ``RowParallelLinear``, torch norms, ``SequentialMLP`` experts), with a core attention that
  runs anywhere (:class:`SDPAttention`, ``torch.nn.functional.scaled_dot_product_attention``,
  packed ``thd`` sequences included) in place of ``DotProductAttention`` (which needs a CUDA
  memory buffer).
* Megatron's ``TESpecProvider`` when Transformer Engine is installed.

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
from megatron.core.transformer.spec_utils import ModuleSpec  # noqa: E402
from megatron.core.transformer.torch_norm import WrappedTorchNorm  # noqa: E402
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules  # noqa: E402
from megatron.core.transformer.transformer_config import TransformerConfig  # noqa: E402
from megatron.core.transformer.transformer_layer import (  # noqa: E402
    TransformerLayer,
    TransformerLayerSubmodules,
    get_transformer_layer_offset,
)
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add  # noqa: E402

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
        head_dim = config.kv_channels
        self.softmax_scale = softmax_scale if softmax_scale is not None else head_dim**-0.5
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

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
                query, key, value, packed_seq_params.cu_seqlens_q, dropout=dropout, scale=self.softmax_scale
            )
        if attention_mask is not None:
            raise ValueError("SDPAttention builds its own causal mask; pass attention_mask=None")
        seq, batch = query.shape[:2]
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=dropout, scale=self.softmax_scale,
            enable_gqa=q.shape[1] != k.shape[1],
        )
        return out.permute(2, 0, 1, 3).reshape(seq, batch, -1)


def _packed_causal_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor, *,
    dropout: float, scale: float,
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

    out = F.scaled_dot_product_attention(
        padded(query), padded(key), padded(value), is_causal=True, dropout_p=dropout, scale=scale,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2)[row, column].reshape(total, -1)


class TorchSpecProvider(LocalSpecProvider):
    """Megatron's local modules with :class:`SDPAttention` as the core attention and torch's
    RMSNorm (works on CPU and on CUDA without Apex or Transformer Engine)."""

    def layer_norm(self, rms_norm: bool = False, for_qk: bool = False) -> type:
        return WrappedTorchNorm

    def core_attention(self) -> type:
        return SDPAttention


class PolicyRouter(TopKRouter):
    """Top-k router whose gate is a plain ``F.linear`` in the router dtype, with per-layer
    routing record/replay. Everything else (score function, top-k, renormalisation) is
    Megatron's ``TopKRouter``."""

    def __init__(self, config: TransformerConfig, pg_collection: Any = None) -> None:
        super().__init__(config=config, pg_collection=pg_collection)
        # Megatron's replay hook: topk_routing_with_score_function calls
        # router_replay.get_replay_topk(...) when it is set.
        self.router_replay = LayerRoutingReplay()

    def gating(self, input: torch.Tensor) -> torch.Tensor:
        router_dtype = {"fp32": torch.float32, "fp64": torch.float64}.get(
            self.config.moe_router_dtype, input.dtype
        )
        bias = None if self.bias is None else self.bias.to(router_dtype)
        return F.linear(input.to(router_dtype), self.weight.to(router_dtype), bias)


def select_backend(use_transformer_engine: bool | None = None) -> BackendSpecProvider:
    """TE's provider where Transformer Engine (and CUDA) is available, else the torch one."""
    if use_transformer_engine is None:
        use_transformer_engine = transformer_engine_available()
    if use_transformer_engine:
        from megatron.core.extensions.transformer_engine_spec_provider import TESpecProvider

        return TESpecProvider()
    return TorchSpecProvider()


def layer_spec(backend: BackendSpecProvider, config: TransformerConfig, moe: bool) -> ModuleSpec:
    """One decoder layer: pre-norm self-attention, pre-norm MLP (dense or MoE)."""
    fused_norm = backend.fuse_layernorm_and_linear()
    norm = backend.layer_norm(rms_norm=True, for_qk=False)
    qk_norm = backend.layer_norm(rms_norm=True, for_qk=True) if config.qk_layernorm else IdentityOp
    if moe:
        mlp = get_moe_module_spec_for_backend(
            backend=backend, num_experts=config.num_moe_experts, moe_grouped_gemm=False
        )
        mlp.module = PolicyMoELayer
        mlp.submodules.router = PolicyRouter
        pre_mlp_norm = norm
    else:
        fc1 = backend.column_parallel_layer_norm_linear() if fused_norm else backend.column_parallel_linear()
        mlp = ModuleSpec(
            module=MLP,
            submodules=MLPSubmodules(linear_fc1=fc1, linear_fc2=backend.row_parallel_linear()),
        )
        pre_mlp_norm = IdentityOp if fused_norm else norm
    qkv = backend.column_parallel_layer_norm_linear() if fused_norm else backend.column_parallel_linear()
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=IdentityOp if fused_norm else norm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=qkv,
                    core_attention=backend.core_attention(),
                    linear_proj=backend.row_parallel_linear(),
                    q_layernorm=qk_norm,
                    k_layernorm=qk_norm,
                ),
            ),
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
    pp_rank: int | None = None,
) -> TransformerBlockSubmodules:
    """Layer specs of this pipeline stage (dense or MoE per ``config.moe_layer_freq``)."""
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    if config.num_moe_experts:
        pattern = config.moe_layer_freq
        if isinstance(pattern, int):
            pattern = [int(i % pattern == 0) for i in range(config.num_layers)]
    else:
        pattern = [0] * config.num_layers
    dense, moe = layer_spec(backend, config, False), None
    if any(pattern):
        moe = layer_spec(backend, config, True)
    specs = [moe if p else dense for p in pattern]
    offset = get_transformer_layer_offset(config, pp_rank=pp_rank)
    count = get_num_layers_to_build(config, pp_rank=pp_rank)
    return TransformerBlockSubmodules(
        layer_specs=specs[offset : offset + count],
        layer_norm=backend.layer_norm(rms_norm=True, for_qk=False),
    )
