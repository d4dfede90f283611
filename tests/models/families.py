"""Tiny random checkpoints of every supported family, written by transformers (nothing is
downloaded). Shared by the policy proofs and the vLLM proofs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

VOCAB = 997

_COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256)

#: Sizes vLLM's CPU kernels accept (head_dim >= 32, MLA latent 512 + rope 64).
_VLLM = dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1)


def family_config(kind: str) -> Any:
    """A transformers config of ``kind``; kinds ending in ``_vllm`` use shapes vLLM's CPU
    backend runs."""
    import transformers

    vllm = kind.endswith("_vllm")
    base = kind.removesuffix("_vllm")
    common = {**_COMMON, **(_VLLM if vllm else {})}
    if base == "llama3":
        # Llama 3.1+ rope scaling with values other than Llama 3.1's (so all four are read),
        # small enough that positions 0..16 see all three frequency bands.
        return transformers.LlamaConfig(**common, rope_parameters={
            "rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
            "high_freq_factor": 2.0, "original_max_position_embeddings": 64}, tie_word_embeddings=vllm)
    if base == "mistral":
        return transformers.MistralConfig(**common, sliding_window=5, head_dim=None)
    if base == "mixtral":
        return transformers.MixtralConfig(**{**common, "intermediate_size": 64 if vllm else 48}, num_local_experts=4,
                                          num_experts_per_tok=2, sliding_window=None)
    if base == "qwen2_moe":
        return transformers.Qwen2MoeConfig(**common, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                           shared_expert_intermediate_size=48, norm_topk_prob=False)
    if base == "deepseek_v3":
        latent = dict(kv_lora_rank=512, qk_rope_head_dim=64) if vllm else dict(kv_lora_rank=32, qk_rope_head_dim=16)
        return transformers.DeepseekV3Config(
            **{**common, "num_key_value_heads": common["num_attention_heads"]}, moe_intermediate_size=32,
            n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2,
            first_k_dense_replace=1, routed_scaling_factor=2.5, q_lora_rank=48, qk_nope_head_dim=32,
            v_head_dim=32, rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                            "original_max_position_embeddings": 32, "beta_fast": 32,
                                            "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
            **latent)
    if base == "gemma3":
        return transformers.Gemma3TextConfig(
            **{**common, "num_hidden_layers": 3}, head_dim=32 if vllm else 16, sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"], query_pre_attn_scalar=24,
            # Tied (Gemma's default) random weights make greedy decoding repeat the last token
            # whatever the weights; the vLLM proof needs outputs that depend on them.
            tie_word_embeddings=not vllm,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 100000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1000.0}})
    if base == "phi3":
        return transformers.Phi3Config(**common, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                       sliding_window=6, rope_parameters={"rope_type": "default",
                                                                          "rope_theta": 10000.0,
                                                                          "partial_rotary_factor": 0.5})
    raise ValueError(f"unknown family kind {kind!r}")


FAMILIES = ("llama3", "mistral", "mixtral", "qwen2_moe", "deepseek_v3", "gemma3", "phi3")
#: Megatron-Core 0.16's MLASelfAttention needs CUDA to be built (its rotary table).
CUDA_ONLY = {"deepseek_v3"}
MOE = {"mixtral", "qwen2_moe", "deepseek_v3"}


def write_family_checkpoint(kind: str, out: Path, seed: int = 0) -> Path:
    """Random weights (larger than the 0.02 default so the comparisons have teeth), norms
    and the DeepSeek correction bias perturbed so none is trivial; ``save_pretrained``."""
    from transformers import AutoModelForCausalLM

    config = family_config(kind)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.08)
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.copy_(0.05 * torch.randn_like(buffer))
    model.save_pretrained(out)
    return out
