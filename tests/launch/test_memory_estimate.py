"""Memory estimate: the stated per-parameter accounting, sharding, activation scaling and
the colocated vLLM KV cache, checked against hand-computed values."""

from __future__ import annotations

import pytest

from r1core.parallel.layout import ParallelConfig, padded_vocab_size, resolve_layout
from r1core.launch.memory import GIB, MemoryInputs, estimate_memory
from r1core.models.shape import PRESETS, ModelShape

QWEN_7B = PRESETS["qwen2.5-7b"]


def _estimate(world=8, model=QWEN_7B, **kwargs):
    inputs = {k: kwargs.pop(k) for k in list(kwargs) if k in MemoryInputs.__dataclass_fields__}
    layout = resolve_layout(ParallelConfig(**kwargs), world)
    return estimate_memory(layout, model, MemoryInputs(**inputs))


def test_state_bytes_per_parameter_follow_megatron_mixed_precision():
    # TP = PP = 1: every rank holds the whole model; distributed optimizer over DP = 8.
    estimate = _estimate(world=8)
    params = QWEN_7B.total_params()  # vocabulary 152064 is already a multiple of 128
    assert estimate.params_per_gpu == params
    assert estimate.training["weights (bf16)"] == pytest.approx(2 * params)
    assert estimate.training["gradients (fp32 main_grad)"] == pytest.approx(4 * params)
    assert estimate.training["optimizer (fp32 main + Adam)"] == pytest.approx(12 * params / 8)
    state = sum(v for k, v in estimate.training.items() if k.split()[0] in ("weights", "gradients", "optimizer"))
    assert state / params == pytest.approx(6 + 12 / 8)  # Megatron's "6 + 12/d" bytes/param
    plain = _estimate(world=8, distributed_optimizer=False)
    assert plain.training["optimizer (fp32 main + Adam)"] == pytest.approx(12 * params)


def test_tensor_and_pipeline_parallel_shard_the_parameters():
    whole = _estimate(world=1).params_per_gpu
    tp2 = _estimate(world=2, tensor=2).params_per_gpu
    norms = QWEN_7B.num_layers * 2 * QWEN_7B.hidden_size + QWEN_7B.hidden_size
    assert tp2 == pytest.approx((whole - norms) / 2 + norms, rel=1e-6)
    pp2 = _estimate(world=2, pipeline=2)
    embedding = padded_vocab_size(QWEN_7B.vocab_size, 1) * QWEN_7B.hidden_size
    # Each stage holds 14 layers and one of the embedding/output matrices.
    assert pp2.params_per_gpu == pytest.approx(14 * QWEN_7B.dense_layer_params() + embedding, rel=1e-3)


def test_expert_parameters_shard_over_expert_parallel():
    model = PRESETS["qwen3-30b-a3b"]
    ep1 = _estimate(world=8, model=model)
    ep8 = _estimate(world=8, model=model, expert=8)
    assert ep8.expert_params_per_gpu == pytest.approx(ep1.expert_params_per_gpu / 8, rel=1e-6)
    assert ep1.expert_params_per_gpu == 48 * model.moe_layer_expert_params()
    # Expert optimizer states shard over expert-DP (8 / 8 = 1) instead of DP (8).
    experts = ep8.expert_params_per_gpu
    non_expert = ep8.params_per_gpu - experts
    assert ep8.training["optimizer (fp32 main + Adam)"] == pytest.approx(12 * non_expert / 8 + 12 * experts / 1)


def test_activation_formula_for_one_dense_layer():
    model = ModelShape(hidden_size=64, num_layers=1, num_attention_heads=4, num_kv_heads=2,
                       ffn_hidden_size=128, vocab_size=256, tied_embeddings=True)
    estimate = _estimate(world=1, model=model, sequence_length=32, micro_batch_size=2, overhead_gib=0.0)
    s_b, h, q, g, f, heads, vocab = 64, 64, 64, 32, 128, 4, 256
    layer = 4 * s_b * h + 2 * s_b * (q + 2 * g) + 2 * s_b * q + 4 * s_b * heads + 4 * s_b * h + 6 * s_b * f
    embedding_output, logits = 2 * s_b * h, 6 * s_b * vocab
    assert estimate.training["activations (recompute=selective)"] == pytest.approx(layer + embedding_output + logits)


def test_activation_scaling_with_parallelism_and_recompute():
    base = dict(world=8, tensor=4, sequence_length=8192)
    key = "activations (recompute={})"
    plain = _estimate(**base).training[key.format("selective")]
    sequence_parallel = _estimate(**base, sequence_parallel=True).training[key.format("selective")]
    full = _estimate(**base, sequence_parallel=True, recompute="full").training[key.format("full")]
    context = _estimate(world=8, tensor=4, context=2, sequence_length=8192, sequence_parallel=True)
    assert full < sequence_parallel < plain
    assert context.training[key.format("selective")] == pytest.approx(sequence_parallel / 2, rel=1e-9)


def test_pipeline_first_stage_holds_micro_batches_in_flight():
    key = "activations (recompute=selective)"
    two = _estimate(world=4, pipeline=4, num_microbatches=2)
    four = _estimate(world=4, pipeline=4, num_microbatches=4)
    sixteen = _estimate(world=4, pipeline=4, num_microbatches=16)
    assert two.stage == four.stage == "first stage"
    assert four.training[key] == pytest.approx(2 * two.training[key])
    assert sixteen.training[key] == pytest.approx(four.training[key])  # capped at PP in flight


def test_rollout_kv_cache_per_token_and_capacity():
    estimate = _estimate(world=8, rollout_tensor=1, gpu_memory_gib=80.0, gpu_memory_utilization=0.5)
    per_token = 2 * 28 * 4 * 128 * 2  # K and V, layers, KV heads, head dim, bf16
    assert estimate.rollout["_kv_bytes_per_token"] == per_token
    weights = 2 * QWEN_7B.total_params()
    assert estimate.rollout["_kv_tokens"] == (0.5 * 80 * GIB - weights) // per_token
    assert estimate.rollout_problem() is None
    # TP 8 > 4 KV heads: each rank still stores one KV head.
    tp8 = _estimate(world=8, rollout_tensor=8)
    assert tp8.rollout["_kv_bytes_per_token"] == 2 * 28 * 1 * 128 * 2


def test_rollout_problems_are_reported():
    big = _estimate(world=8, model=PRESETS["llama-3-70b"], tensor=8, rollout_tensor=1, gpu_memory_utilization=0.5)
    assert "weights alone exceed" in big.rollout_problem()
    resident = _estimate(world=8, rollout_tensor=1, offload_trainer_during_rollout=False, gpu_memory_utilization=0.9)
    assert "resident state" in resident.rollout_problem()


def test_too_big_for_the_gpu_is_flagged():
    estimate = _estimate(world=8, model=PRESETS["llama-3-70b"])
    assert not estimate.fits
    assert "DOES NOT FIT" in estimate.format()
    assert _estimate(world=8, model=PRESETS["qwen2.5-0.5b"]).fits


def test_unknown_recompute_mode():
    with pytest.raises(ValueError, match="recompute must be one of"):
        _estimate(recompute="partial")
