"""Layout validation: sizes against the world, model shapes against the layout, and the
model description read from Hugging Face configs."""

from __future__ import annotations

import json

import pytest

from r1core.parallel.layout import (
    LayoutError,
    ParallelConfig,
    check_model_fits,
    padded_vocab_size,
    resolve_layout,
)
from r1core.models.hf_config import from_hf_config, load_model_shape
from r1core.models.shape import PRESETS, ModelShape


def test_sixty_four_gpus_tp4_pp2_ep8_resolves():
    layout = resolve_layout(ParallelConfig(tensor=4, pipeline=2, expert=8, sequence_parallel=True), 64)
    assert (layout.data, layout.expert_tensor, layout.expert_data) == (8, 4, 1)
    assert "64 GPUs = TP 4 x CP 1 x DP 8 x PP 2" in layout.describe()
    assert "EP 8" in layout.describe()


@pytest.mark.parametrize(
    ("config", "world", "message"),
    [
        (ParallelConfig(tensor=3), 64, "world size 64 is not divisible by tensor x pipeline x context = 3 x 1 x 1 = 3"),
        (ParallelConfig(tensor=4, pipeline=4, context=8), 64, "= 128"),
        (ParallelConfig(tensor=4, expert=32), 64, "expert x expert_tensor = 32 x 4 = 128 must divide"),
        (ParallelConfig(tensor=2, data=8), 64, "data=8 does not fit: world size 64 / (tensor x pipeline x context = 2) gives data-parallel size 32"),
        (ParallelConfig(sequence_parallel=True), 8, "sequence_parallel needs tensor > 1"),
        (ParallelConfig(pipeline=1, virtual_pipeline=2), 8, "virtual_pipeline needs pipeline > 1"),
        (ParallelConfig(tensor=0), 8, "tensor must be a positive integer, got 0"),
        (ParallelConfig(order="tp-dp-pq"), 8, "unknown names ['pq']"),
        (ParallelConfig(tensor=2, order="dp-pp"), 8, "omits 'tp', whose size is 2"),
        (ParallelConfig(tensor=2, pipeline=2, expert=2, order="tp-cp-ep-pp-dp"), 16, "does not put pp last"),
    ],
)
def test_impossible_layouts_are_refused_with_the_reason(config, world, message):
    with pytest.raises(LayoutError) as raised:
        resolve_layout(config, world)
    assert message in str(raised.value)


def test_every_broken_rule_is_reported_at_once():
    with pytest.raises(LayoutError) as raised:
        resolve_layout(ParallelConfig(tensor=3, sequence_parallel=False, pipeline=1, virtual_pipeline=2), 64)
    assert len(raised.value.problems) == 2


def test_expert_parallel_folds_into_data_and_context():
    # 32 GPUs, TP 2 x CP 2 x PP 2 -> DP 4; EP 8 x ETP 2 = 16 = TP x CP x DP: expert DP 1.
    layout = resolve_layout(ParallelConfig(tensor=2, context=2, pipeline=2, expert=8), 32)
    assert (layout.data, layout.expert_data) == (4, 1)
    # ETP 1 frees the TP ranks for experts: EP 16 fits the same ranks; EP 32 does not.
    layout = resolve_layout(ParallelConfig(tensor=2, context=2, pipeline=2, expert=16, expert_tensor=1), 32)
    assert layout.expert_data == 1
    with pytest.raises(LayoutError, match="must divide the ranks of one pipeline stage"):
        resolve_layout(ParallelConfig(tensor=2, context=2, pipeline=2, expert=32, expert_tensor=1), 32)


QWEN_7B = PRESETS["qwen2.5-7b"]


@pytest.mark.parametrize(
    ("config", "model", "message"),
    [
        (ParallelConfig(tensor=8), QWEN_7B, "num_attention_heads=28 is not divisible by tensor=8"),
        (ParallelConfig(pipeline=8), QWEN_7B, "num_layers=28 is not divisible by pipeline=8"),
        (ParallelConfig(pipeline=2, virtual_pipeline=4), QWEN_7B, "pipeline x virtual_pipeline = 2 x 4"),
        (ParallelConfig(tensor=4, expert=2), PRESETS["qwen3-30b-a3b"], "needs sequence_parallel=true"),
        (ParallelConfig(expert=2), QWEN_7B, "expert=2 but the model has no experts"),
        (
            ParallelConfig(tensor=2, sequence_parallel=True),
            ModelShape(1024, 4, 12, 3, 4096, 1000),
            "num_kv_heads=3 must be a multiple or a divisor of tensor=2",
        ),
    ],
)
def test_model_shape_rules(config, model, message):
    layout = resolve_layout(config, 16)
    with pytest.raises(LayoutError) as raised:
        check_model_fits(layout, model)
    assert message in str(raised.value)


def test_experts_must_divide_by_expert_parallel():
    model = ModelShape(1024, 4, 16, 4, 4096, 32000, num_experts=6, moe_top_k=2, moe_ffn_hidden_size=512)
    layout = resolve_layout(ParallelConfig(expert=4), 8)
    with pytest.raises(LayoutError, match="num_experts=6 is not divisible by expert=4"):
        check_model_fits(layout, model)


def test_sequence_length_rules_for_context_and_sequence_parallel():
    layout = resolve_layout(ParallelConfig(tensor=2, context=4, sequence_parallel=True), 8)
    with pytest.raises(LayoutError, match="not divisible by 2 x context = 8"):
        check_model_fits(layout, QWEN_7B, sequence_length=4100)
    assert check_model_fits(layout, QWEN_7B, sequence_length=4096) == []


def test_vocab_padding_and_kv_replication_notes():
    assert padded_vocab_size(151936, 1) == 151936
    assert padded_vocab_size(151936, 2) == 152064
    assert padded_vocab_size(50257, 4) == 50688
    layout = resolve_layout(ParallelConfig(tensor=2, sequence_parallel=True), 8)
    assert check_model_fits(layout, PRESETS["llama-3-8b"]) == []  # 128256 = 501 x 256
    notes = check_model_fits(resolve_layout(ParallelConfig(tensor=8), 8), PRESETS["llama-3-8b"])
    assert notes == ["vocabulary padded from 128256 to 129024 (multiple of 128 x TP 8)"]
    notes = check_model_fits(resolve_layout(ParallelConfig(tensor=4), 4), PRESETS["qwen2.5-1.5b"])
    assert any("2 KV heads < TP 4" in note for note in notes)
    assert any("151936 to 152064" in note for note in notes)


@pytest.mark.parametrize(
    ("name", "published_billions"),
    [("qwen2.5-0.5b", 0.494), ("qwen2.5-7b", 7.61), ("llama-3-8b", 8.03), ("llama-3-70b", 70.55), ("qwen3-30b-a3b", 30.53)],
)
def test_preset_parameter_counts_match_published_totals(name, published_billions):
    assert PRESETS[name].total_params() / 1e9 == pytest.approx(published_billions, rel=2e-3)


def test_moe_active_parameters():
    assert PRESETS["qwen3-30b-a3b"].active_params() / 1e9 == pytest.approx(3.35, rel=1e-2)


def test_from_hf_config_dense_and_moe(tmp_path):
    dense = {
        "model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
        "tie_word_embeddings": True, "hidden_act": "silu",
    }
    (tmp_path / "config.json").write_text(json.dumps(dense))
    shape = from_hf_config(tmp_path)
    assert shape.total_params() == PRESETS["qwen2.5-0.5b"].total_params()
    moe = {
        "model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 32000,
        "num_local_experts": 8, "num_experts_per_tok": 2,
    }
    path = tmp_path / "mixtral.json"
    path.write_text(json.dumps(moe))
    shape = from_hf_config(path)
    assert (shape.num_experts, shape.moe_top_k, shape.moe_ffn_hidden_size) == (8, 2, 14336)
    assert shape.total_params() / 1e9 == pytest.approx(46.70, rel=2e-3)  # Mixtral-8x7B


def test_from_hf_config_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ValueError, match="cannot find"):
        from_hf_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match="model_type None is not supported; supported: deepseek_v3"):
        from_hf_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma2", "hidden_size": 8}))
    with pytest.raises(ValueError, match="soft-capping"):
        from_hf_config(tmp_path)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        load_model_shape("nope")


@pytest.mark.parametrize(
    ("config_class", "extra"),
    [
        ("Qwen2Config", {"tie_word_embeddings": True}),
        ("LlamaConfig", {"tie_word_embeddings": False}),
        ("MixtralConfig", {"num_local_experts": 4, "num_experts_per_tok": 2}),
        ("Qwen2MoeConfig", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 24,
                            "shared_expert_intermediate_size": 40}),
        ("Qwen2MoeConfig", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 24,
                            "shared_expert_intermediate_size": 40, "mlp_only_layers": [0]}),
        ("Qwen3MoeConfig", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 24,
                            "decoder_sparse_step": 2, "head_dim": 32}),
        ("MistralConfig", {"sliding_window": 16}),
        ("Phi3Config", {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}),
        ("Gemma3TextConfig", {"head_dim": 16}),
        ("DeepseekV3Config", {"n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 4,
                              "n_group": 4, "topk_group": 2, "first_k_dense_replace": 1,
                              "moe_intermediate_size": 24, "q_lora_rank": 32, "kv_lora_rank": 16,
                              "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16}),
    ],
)
def test_parameter_count_matches_a_real_transformers_model(tmp_path, config_class, extra):
    """The shape read from config.json counts exactly the parameters transformers builds."""
    transformers = pytest.importorskip("transformers")
    import torch

    config = getattr(transformers, config_class)(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=96, vocab_size=300, **extra,
    )
    config.save_pretrained(tmp_path)
    shape = from_hf_config(tmp_path)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    real = sum(parameter.numel() for parameter in model.parameters())
    assert shape.total_params() == real
