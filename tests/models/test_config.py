"""Config mapping and layout validation (no model is built)."""

from __future__ import annotations

import pytest

from r1core.models import UnsupportedModelError, from_hf_config, parse_hf_config
from r1core.parallel import LayoutError, ParallelConfig, check_model_fits, padded_vocab_size, resolve_layout


def test_qwen2_and_qwen3_moe_shapes(checkpoints):
    dense = from_hf_config(checkpoints["qwen2"])
    assert (dense.qkv_bias, dense.qk_norm, dense.num_experts, dense.kv_channels) == (True, False, 0, 16)
    assert not dense.tied_embeddings
    assert from_hf_config(checkpoints["qwen2_tied"]).tied_embeddings
    moe = from_hf_config(checkpoints["qwen3_moe"])
    assert (moe.qk_norm, moe.qkv_bias, moe.num_experts, moe.moe_top_k) == (True, False, 4, 2)
    assert moe.moe_layer_pattern == [1, 1] and moe.router.normalize_top_k


def test_sparse_step_and_dense_layers_pattern():
    cfg = dict(model_type="qwen3_moe", vocab_size=10, hidden_size=8, num_hidden_layers=4,
               num_attention_heads=2, num_key_value_heads=1, intermediate_size=16,
               moe_intermediate_size=4, num_experts=4, num_experts_per_tok=1,
               decoder_sparse_step=2, mlp_only_layers=[3], rope_theta=1e6)
    shape = parse_hf_config(cfg)
    assert shape.moe_layer_pattern == [0, 1, 0, 0] and shape.num_dense_layers == 3
    assert shape.rope.theta == 1e6 and shape.num_experts == 4


def test_unsupported_models_are_named():
    with pytest.raises(UnsupportedModelError, match="gpt2.*supported: .*qwen2"):
        parse_hf_config({"model_type": "gpt2"})
    base = dict(model_type="qwen2", vocab_size=10, hidden_size=8, num_hidden_layers=1,
                num_attention_heads=2, intermediate_size=16)
    with pytest.raises(UnsupportedModelError, match="activation 'gelu'"):
        parse_hf_config({**base, "hidden_act": "gelu"})
    with pytest.raises(UnsupportedModelError, match="rope_type 'yarn'"):
        parse_hf_config({**base, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0}})


def test_padded_vocab():
    assert padded_vocab_size(997, 1) == 1024
    assert padded_vocab_size(997, 2) == 1024
    assert padded_vocab_size(1025, 4) == 1536
    assert padded_vocab_size(512, 4) == 512


def test_layout_against_model(checkpoints):
    """Megatron-Core's model-shape rules and the policy's own limits, from a real config.json."""
    from r1core.models.policy import check_policy_supports

    moe = from_hf_config(checkpoints["qwen3_moe"])
    dense = from_hf_config(checkpoints["qwen2"])
    with pytest.raises(LayoutError, match="num_kv_heads=2 is not divisible by tensor=4"):
        check_policy_supports(ParallelConfig(tensor=4), dense)
    with pytest.raises(LayoutError, match="num_layers=2 is not divisible by pipeline=4"):
        check_model_fits(resolve_layout(ParallelConfig(pipeline=4), 4), dense)
    with pytest.raises(LayoutError, match="num_experts=4 is not divisible by expert=8"):
        check_model_fits(resolve_layout(ParallelConfig(expert=8), 8), moe)
    with pytest.raises(LayoutError, match="has no experts"):
        check_model_fits(resolve_layout(ParallelConfig(expert=2), 2), dense)
    with pytest.raises(LayoutError, match="context=2"):
        check_policy_supports(ParallelConfig(context=2))
    check_model_fits(resolve_layout(ParallelConfig(pipeline=2, expert=2), 4), moe)


def test_build_policy_rejects_bad_layout_before_any_work(checkpoints, tmp_path):
    """A layout that does not fit the world size fails before process groups or weights."""
    from r1core.models import build_policy

    with pytest.raises(LayoutError, match="world size 1"):
        build_policy(checkpoints["qwen2"], ParallelConfig(tensor=2))
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_policy(tmp_path)
