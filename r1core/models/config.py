""":class:`~r1core.models.shape.ModelShape` -> Megatron-Core ``TransformerConfig``.

Every feature of the record maps to one of Megatron-Core's own options: grouped-query
attention, q/k norms, sliding windows (``window_size`` / ``window_attn_skip_freq``), rope
scaling, multi-head latent attention (``MLATransformerConfig``), and the MoE router options
(score function, expert bias, group-limited top-k, scaling, shared experts). megatron-core is
imported when :func:`transformer_config` is called, so the module itself stays light.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from r1core.models.shape import ModelShape


def _activation(name: str):
    if name == "gelu_tanh":
        return partial(torch.nn.functional.gelu, approximate="tanh")
    return torch.nn.functional.silu


def grouped_gemm_default() -> bool:
    """Experts as one grouped GEMM by default only where Megatron-Core has one: its
    ``TEGroupedMLP`` (Transformer Engine) or legacy ``GroupedMLP`` (the ``grouped_gemm``
    package), both CUDA-only. On CPU the experts run as Megatron's ``SequentialMLP`` (a loop)."""
    if not torch.cuda.is_available():
        return False
    try:
        import transformer_engine  # noqa: F401
    except Exception:
        from megatron.core.transformer.moe import grouped_gemm_util

        return grouped_gemm_util.grouped_gemm_is_available()
    return True


def transformer_config(
    shape: ModelShape,
    parallel: Any,
    *,
    dtype: torch.dtype,
    token_dispatcher: str | None = None,
    recompute: bool = False,
    grouped_gemm: bool | None = None,
    extra: dict[str, Any] | None = None,
):
    """Build Megatron's ``TransformerConfig`` (``MLATransformerConfig`` for latent attention)
    for ``shape`` under the layout ``parallel`` (a :class:`r1core.parallel.ParallelConfig`).

    Fusions that need Apex/TE/CUDA are off; the checkpoint supplies every weight, so Megatron's
    random initialisation is skipped. ``grouped_gemm`` None picks :func:`grouped_gemm_default`.
    """
    from megatron.core.transformer.transformer_config import MLATransformerConfig, TransformerConfig

    on_cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = dict(
        num_layers=shape.num_layers,
        hidden_size=shape.hidden_size,
        num_attention_heads=shape.num_attention_heads,
        num_query_groups=shape.num_kv_heads,
        kv_channels=shape.kv_channels,
        ffn_hidden_size=shape.ffn_hidden_size or shape.moe_ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=shape.norm_eps,
        layernorm_zero_centered_gamma=shape.zero_centered_norms,
        add_bias_linear=False,
        add_qkv_bias=shape.qkv_bias,
        qk_layernorm=shape.qk_norm,
        gated_linear_unit=True,
        activation_func=_activation(shape.activation),
        softmax_scale=shape.softmax_scale,
        # MLA takes DeepSeek's interleaved rope layout by itself (apply_rotary_pos_emb).
        rotary_interleaved=shape.rope.interleaved and shape.latent_attention is None,
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
    if shape.sliding_window:
        # Megatron's window is (keys to the left, keys to the right); Hugging Face's
        # sliding_window counts the query itself.
        kwargs["window_size"] = (shape.sliding_window - 1, 0)
        if shape.window_layers:
            kwargs["window_attn_skip_freq"] = [int(w) for w in shape.window_layers]
    if recompute:
        kwargs.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    if shape.is_moe:
        router = shape.router
        use_grouped = grouped_gemm_default() if grouped_gemm is None else grouped_gemm
        kwargs.update(
            num_moe_experts=shape.num_experts,
            moe_router_topk=shape.moe_top_k,
            moe_ffn_hidden_size=shape.moe_ffn_hidden_size,
            moe_layer_freq=shape.moe_layer_pattern,
            moe_router_score_function=router.score_function,
            # Softmax over all experts then top-k (Qwen-MoE without renormalisation) is Megatron's
            # pre-softmax; softmax over the chosen logits equals softmax-then-renormalise.
            moe_router_pre_softmax=router.score_function == "softmax" and not router.normalize_top_k,
            moe_router_topk_scaling_factor=router.scaling_factor if router.scaling_factor != 1.0 else None,
            moe_router_enable_expert_bias=router.expert_bias,
            # The correction bias is a checkpoint value; RL keeps it fixed.
            moe_router_bias_update_rate=0.0,
            moe_router_num_groups=router.num_groups or None,
            moe_router_group_topk=router.group_top_k or None,
            moe_shared_expert_intermediate_size=shape.shared_expert_ffn_hidden_size or None,
            moe_shared_expert_gate=shape.shared_expert_gate,
            moe_router_dtype="fp32",
            moe_router_load_balancing_type="none",
            moe_aux_loss_coeff=0.0,
            # alltoall creates a CUDA stream at construction; on CPU the all-gather dispatcher
            # (with the gloo collectives of r1core.models.moe) is used.
            moe_token_dispatcher_type=token_dispatcher or ("alltoall" if on_cuda else "allgather"),
            moe_grouped_gemm=use_grouped,
            moe_permute_fusion=False,
        )
    # Pipeline schedules exchange shapes per micro-batch (sequences differ in length); Megatron
    # forbids that flag with the all-gather dispatcher, which the CPU path uses.
    # (Dense models build no dispatcher; naming alltoall only lifts that restriction.)
    kwargs.setdefault("moe_token_dispatcher_type", "alltoall")
    kwargs["variable_seq_lengths"] = kwargs["moe_token_dispatcher_type"] != "allgather"
    config_class = TransformerConfig
    mla = shape.latent_attention
    if mla is not None:
        config_class = MLATransformerConfig
        rope = shape.rope
        kwargs.update(
            q_lora_rank=mla.q_lora_rank or None,
            kv_lora_rank=mla.kv_lora_rank,
            qk_head_dim=mla.qk_nope_head_dim,
            qk_pos_emb_head_dim=mla.qk_rope_head_dim,
            v_head_dim=mla.v_head_dim,
            kv_channels=mla.v_head_dim,
            rope_type="yarn" if rope.kind == "yarn" else "rope",
            rotary_base=rope.theta,
            rotary_scaling_factor=rope.factor,
            original_max_position_embeddings=rope.original_max_position_embeddings or shape.max_position_embeddings,
            beta_fast=rope.beta_fast,
            beta_slow=rope.beta_slow,
            mscale=rope.mscale,
            mscale_all_dim=rope.mscale_all_dim,
        )
    kwargs.update(extra or {})
    return config_class(**kwargs)
