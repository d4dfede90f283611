"""Tiny random Hugging Face checkpoints written by transformers (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("megatron.core")
pytest.importorskip("transformers")

VOCAB = 997  # not a multiple of 128: exercises vocabulary padding


def write_checkpoint(kind: str, out: Path, *, max_shard_size: str | None = None) -> Path:
    """Save a random-initialised tiny model of ``kind`` (qwen2 / qwen2_tied / qwen3_moe)."""
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3MoeConfig

    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256)
    if kind in ("qwen2", "qwen2_tied"):
        config = Qwen2Config(intermediate_size=128, tie_word_embeddings=kind == "qwen2_tied", **common)
    elif kind == "qwen2_head64":  # vLLM's CPU attention needs head_dim >= 32
        config = Qwen2Config(**{**common, "hidden_size": 128, "num_attention_heads": 2,
                                "num_key_value_heads": 1}, intermediate_size=256, tie_word_embeddings=True)
    elif kind == "qwen3_moe_head64":
        config = Qwen3MoeConfig(**{**common, "hidden_size": 128, "num_attention_heads": 2,
                                   "num_key_value_heads": 1}, intermediate_size=96, moe_intermediate_size=32,
                                head_dim=64, num_local_experts=4, num_experts_per_tok=2, norm_topk_prob=True)
    elif kind == "qwen3_moe":
        config = Qwen3MoeConfig(intermediate_size=96, moe_intermediate_size=32, head_dim=16,
                                num_local_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
                                tie_word_embeddings=False, **common)
    else:
        raise ValueError(kind)
    torch.manual_seed({"qwen2": 1, "qwen2_tied": 2, "qwen3_moe": 3, "qwen2_head64": 4, "qwen3_moe_head64": 5}[kind])
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # larger weights than the 0.02 default so the test has teeth
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.08)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **kwargs)
    return out


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: write_checkpoint(kind, root / kind) for kind in ("qwen2", "qwen2_tied", "qwen3_moe")}


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny random checkpoint per family of ``families.FAMILIES``, shared by the
    single-process proofs and the parallel layouts."""
    from families import FAMILIES, write_family_checkpoint

    root = tmp_path_factory.mktemp("families")
    return {kind: write_family_checkpoint(kind, root / kind, seed=10 + i) for i, kind in enumerate(FAMILIES)}


@pytest.fixture(scope="session")
def sharded_checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint("qwen2", tmp_path_factory.mktemp("hf") / "qwen2_sharded", max_shard_size="100KB")
