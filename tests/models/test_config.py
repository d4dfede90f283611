"""Config mapping and layout validation (no model is built)."""

from __future__ import annotations

import pytest

from r1core.models import ParallelConfig, ParallelLayoutError, UnsupportedModelError, model_spec_from_hf
from r1core.models.config import load_hf_config, padded_vocab_size


def test_qwen2_and_qwen3_moe_specs(checkpoints):
    dense = model_spec_from_hf(load_hf_config(checkpoints["qwen2"]))
    assert (dense.qkv_bias, dense.qk_norm, dense.num_experts, dense.head_dim) == (True, False, 0, 16)
    assert not dense.tie_word_embeddings
    assert model_spec_from_hf(load_hf_config(checkpoints["qwen2_tied"])).tie_word_embeddings
    moe = model_spec_from_hf(load_hf_config(checkpoints["qwen3_moe"]))
    assert (moe.qk_norm, moe.qkv_bias, moe.num_experts, moe.moe_top_k) == (True, False, 4, 2)
    assert moe.moe_layer_pattern == [1, 1] and moe.moe_norm_top_k_prob


def test_sparse_step_and_dense_layers_pattern():
    cfg = dict(model_type="qwen3_moe", vocab_size=10, hidden_size=8, num_hidden_layers=4,
               num_attention_heads=2, num_key_value_heads=1, intermediate_size=16,
               moe_intermediate_size=4, num_experts=4, num_experts_per_tok=1,
               decoder_sparse_step=2, mlp_only_layers=[3], rope_theta=1e6)
    spec = model_spec_from_hf(cfg)
    assert spec.moe_layer_pattern == [0, 1, 0, 0]
    assert spec.rope_theta == 1e6 and spec.num_experts == 4


def test_unsupported_models_are_named():
    with pytest.raises(UnsupportedModelError, match="gpt2.*supported: .*qwen2"):
        model_spec_from_hf({"model_type": "gpt2"})
    base = dict(model_type="qwen2", vocab_size=10, hidden_size=8, num_hidden_layers=1,
                num_attention_heads=2, intermediate_size=16)
    with pytest.raises(UnsupportedModelError, match="hidden_act"):
        model_spec_from_hf({**base, "hidden_act": "gelu"})
    with pytest.raises(UnsupportedModelError, match="rope_type"):
        model_spec_from_hf({**base, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0}})


def test_padded_vocab():
    assert padded_vocab_size(997, 1) == 1024
    assert padded_vocab_size(997, 2) == 1024
    assert padded_vocab_size(1025, 4) == 1536
    assert padded_vocab_size(512, 4) == 512


@pytest.mark.parametrize(
    "layout, world, message",
    [
        (ParallelConfig(tensor=2), 3, "not divisible by tensor"),
        (ParallelConfig(tensor=2, pipeline=2), 2, r"tensor \(2\) x pipeline \(2\)"),
        (ParallelConfig(expert=4), 2, "expert"),
        (ParallelConfig(pipeline=2, expert=2), 2, "ranks per stage"),
        (ParallelConfig(sequence_parallel=True), 1, "sequence_parallel"),
        (ParallelConfig(tensor=0), 1, "positive"),
    ],
)
def test_layout_errors(layout, world, message):
    with pytest.raises(ParallelLayoutError, match=message):
        layout.validate(world)


def test_valid_layouts_and_data_parallel_size():
    assert ParallelConfig(tensor=2, pipeline=2).data_parallel_size(8) == 2
    ParallelConfig(tensor=2, expert=4).validate(8)
    ParallelConfig(tensor=2, sequence_parallel=True).validate(2)


def test_layout_against_model(checkpoints):
    moe = model_spec_from_hf(load_hf_config(checkpoints["qwen3_moe"]))
    dense = model_spec_from_hf(load_hf_config(checkpoints["qwen2"]))
    with pytest.raises(ParallelLayoutError, match="num_key_value_heads = 2 .*tensor = 4"):
        ParallelConfig(tensor=4).validate_for_model(dense)
    with pytest.raises(ParallelLayoutError, match="num_hidden_layers = 2 .*pipeline = 4"):
        ParallelConfig(pipeline=4).validate_for_model(dense)
    with pytest.raises(ParallelLayoutError, match="num_experts = 4 .*expert = 8"):
        ParallelConfig(expert=8).validate_for_model(moe)
    with pytest.raises(ParallelLayoutError, match="has no experts"):
        ParallelConfig(expert=2).validate_for_model(dense)
    ParallelConfig(tensor=2, pipeline=2, expert=2).validate_for_model(moe)


def test_build_policy_rejects_bad_layout_before_any_work(checkpoints, tmp_path):
    """A layout that does not fit the world size fails before process groups or weights."""
    from r1core.models import build_policy

    with pytest.raises(ParallelLayoutError, match="world size 1"):
        build_policy(checkpoints["qwen2"], ParallelConfig(tensor=2))
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_policy(tmp_path)


def test_coerce_from_another_layout_object():
    from types import SimpleNamespace

    other = SimpleNamespace(tensor=2, pipeline=1, expert=2, expert_tensor=None, context=1,
                            virtual_pipeline=None, sequence_parallel=True, data=0)
    layout = ParallelConfig.coerce(other)
    assert (layout.tensor, layout.expert, layout.expert_tensor_size, layout.sequence_parallel) == (2, 2, 2, True)
    with pytest.raises(ParallelLayoutError, match="context=2"):
        ParallelConfig.coerce(SimpleNamespace(tensor=1, context=2))
