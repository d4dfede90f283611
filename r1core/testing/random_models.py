"""Random-initialised Hugging Face checkpoints for the rollout tests and benchmarks.

No machine here reaches a model hub, so tests and benchmarks build their models: a
transformers config, random weights from a fixed seed, ``save_pretrained``. The same
factory serves ``tests/rollout`` and ``perf/bench_weight_sync.py``.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from r1core._extras import require

ModelKind = Literal["qwen2", "qwen2_tied", "qwen3_moe", "qwen2_0.5b"]


def random_model_config(kind: ModelKind):
    """A transformers config of the named kind (tiny unless the name says otherwise)."""
    transformers = require("transformers", extra="policy", feature="r1core.testing.random_models")
    tiny = dict(
        vocab_size=320, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-6, rope_theta=10000.0, bos_token_id=0, eos_token_id=1,
    )
    if kind in ("qwen2", "qwen2_tied"):
        return transformers.Qwen2Config(**tiny, tie_word_embeddings=kind == "qwen2_tied")
    if kind == "qwen3_moe":
        return transformers.Qwen3MoeConfig(
            **tiny, head_dim=32, num_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=64, decoder_sparse_step=1, norm_topk_prob=True,
            tie_word_embeddings=False,
        )
    if kind == "qwen2_0.5b":
        # Qwen2.5-0.5B's shapes (494M parameters), random weights.
        return transformers.Qwen2Config(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
            rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
            bos_token_id=0, eos_token_id=1,
        )
    raise ValueError(f"unknown model kind {kind!r}; known: {list(ModelKind.__args__)}")


def build_random_model(kind: ModelKind, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A transformers causal LM of ``kind`` with random weights from ``seed``.

    Weights are drawn at a larger scale than transformers' default init (std 0.02 gives a
    nearly uniform next-token distribution); distinct tokens make greedy decoding a
    sharper check.
    """
    transformers = require("transformers", extra="policy", feature="r1core.testing.random_models")
    config = random_model_config(kind)
    config.torch_dtype = dtype
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.08)
    return model.eval()


def save_random_model(out_dir: str | os.PathLike, kind: ModelKind, seed: int = 0,
                      dtype: torch.dtype = torch.float32):
    """``build_random_model`` then ``save_pretrained(out_dir)``; returns the model."""
    model = build_random_model(kind, seed, dtype)
    model.save_pretrained(os.fspath(out_dir))
    return model


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int, scale: float = 0.02) -> None:
    """Add seeded Gaussian noise to every parameter, as a training step would move them."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        param.add_((noise * scale).to(param.dtype))
