"""VLLMRollout in-process: sampling log-probs and weight sync against fresh engines.

The proof of a sync is bitwise: after ``sync_weights`` the engine's greedy tokens and
log-probs (fp32, CPU) equal those of a fresh engine started on the exported weights,
and its greedy tokens equal transformers' own greedy decoding.
"""

from __future__ import annotations

import pytest
import torch

from r1core.algos.mismatch import logprob_mismatch
from r1core.rollout import ModuleWeightSource, VLLMRollout
from tests.rollout.conftest import KINDS, MAX_MODEL_LEN, MAX_TOKENS, PROMPTS, greedy


@pytest.fixture(scope="module", params=KINDS)
def synced(request, checkpoints, fresh_reference):
    """An engine started on the initial weights, then synced to the updated ones."""
    kind = request.param
    ckpt = checkpoints(kind)
    fresh_reference(kind)  # before this engine exists (see the fixture's note)
    engine = VLLMRollout(ckpt.initial_dir, max_model_len=MAX_MODEL_LEN, dtype="float32",
                         bucket_bytes=64 * 1024)
    before = greedy(engine)  # fills the prefix cache with blocks of the old weights
    stats = engine.sync_weights(ModuleWeightSource(ckpt.updated_model))
    yield kind, engine, before, stats
    engine.close()


def _hf_greedy(model, prompt):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=MAX_TOKENS,
                             do_sample=False, eos_token_id=model.config.eos_token_id,
                             pad_token_id=0)
    return out[0, len(prompt):].tolist()


def _hf_logprobs(model, prompt, tokens, temperature=1.0):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(tokens)[:, None])[:, 0]


def test_sync_is_bitwise_equal_to_fresh_engine(synced, fresh_reference):
    kind, engine, before, stats = synced
    after = greedy(engine)
    reference = fresh_reference(kind)
    assert after != before, "the update did not change the outputs; the test proves nothing"
    for (tokens, logprobs), (ref_tokens, ref_logprobs) in zip(after, reference):
        assert tokens == ref_tokens
        assert logprobs == ref_logprobs  # exact float equality
    assert stats.num_buckets > 1, "bucket_bytes was meant to force several buckets"


def test_staging_buffer_is_bounded_by_the_bucket(synced, checkpoints):
    """The embedding (and the MLP weights) are larger than the 64 KiB bucket; they travel
    in pieces and the staging buffer stays the bucket, not the largest tensor."""
    kind, engine, _, stats = synced
    model = checkpoints(kind).updated_model
    largest = max(t.numel() * t.element_size() for _, t in
                  ModuleWeightSource(model).iter_hf_weights())
    assert largest > engine.config.bucket_bytes
    assert stats.staging_bytes == engine.config.bucket_bytes == engine._staging.num_bytes
    # How the engine took the large tensors: vocabulary matrices straight into its live
    # weights (no whole-tensor copy), the other split tensors reassembled for the loaders.
    summary = engine.llm.collective_rpc("r1core_last_update_summary")[0]
    vocabulary = {"qwen2": ["lm_head.weight", "model.embed_tokens.weight"],
                  "qwen2_tied": ["model.embed_tokens.weight"],
                  "qwen3_moe": ["lm_head.weight", "model.embed_tokens.weight"]}[kind]
    assert summary["written_in_place"] == vocabulary
    split = {name for name, tensor in ModuleWeightSource(model).iter_hf_weights()
             if tensor.numel() * tensor.element_size() > engine.config.bucket_bytes}
    assert set(summary["reassembled"]) == split - {"lm_head.weight", "model.embed_tokens.weight"}


def test_bucket_smaller_than_one_row(synced, checkpoints, fresh_reference):
    """A 400-byte bucket is smaller than one embedding row (128 fp32 = 512 bytes): every
    large tensor travels as flat element ranges, and the result is still exact."""
    kind, engine, _, _ = synced
    if kind != "qwen2_tied":
        pytest.skip("one model suffices (thousands of buckets)")
    bucket_bytes = engine.config.bucket_bytes
    engine.set_bucket_bytes(400)
    try:
        stats = engine.sync_weights(ModuleWeightSource(checkpoints(kind).updated_model),
                                    weight_version="1")  # same weights, same tag
        assert stats.staging_bytes == 400 and stats.num_buckets > 1000
        assert greedy(engine) == fresh_reference(kind)
    finally:
        engine.set_bucket_bytes(bucket_bytes)


def test_sync_matches_transformers_greedy(synced, checkpoints):
    kind, engine, _, _ = synced
    model = checkpoints(kind).updated_model
    for prompt, (tokens, logprobs) in zip(PROMPTS, greedy(engine)):
        assert tokens == _hf_greedy(model, prompt)
        hf = _hf_logprobs(model, prompt, tokens)
        mismatch = logprob_mismatch(torch.tensor(logprobs, dtype=torch.float64), hf,
                                    torch.ones(len(tokens)))
        assert mismatch["logprob_diff_max"].item() < 1e-4


def test_weight_version_is_tagged(synced):
    _, engine, _, stats = synced
    assert stats.weight_version == engine.weight_version == "1"
    samples = engine.generate(PROMPTS[:1], n=2, max_tokens=4, temperature=1.0, seed=3)
    assert {s.weight_version for s in samples[0]} == {"1"}


def test_sampled_logprobs_are_after_temperature(synced, checkpoints):
    """Rollout log-probs are log_softmax(logits / T) of the sampled tokens."""
    kind, engine, _, _ = synced
    model = checkpoints(kind).updated_model
    temperature = 0.7
    samples = engine.generate(PROMPTS, n=3, max_tokens=6, temperature=temperature, seed=11)
    again = engine.generate(PROMPTS, n=3, max_tokens=6, temperature=temperature, seed=11)
    assert [[s.token_ids for s in g] for g in samples] == [[s.token_ids for s in g] for g in again]
    for prompt, group in zip(PROMPTS, samples):
        assert len(group) == 3
        for sample in group:
            assert len(sample.token_ids) == len(sample.logprobs) > 0
            assert sample.finish_reason in ("stop", "length")
            if sample.finish_reason == "length":
                assert len(sample.token_ids) == 6
            hf = _hf_logprobs(model, prompt, sample.token_ids, temperature)
            assert torch.allclose(torch.tensor(sample.logprobs, dtype=torch.float64), hf,
                                  atol=1e-4, rtol=0)
            hf_untempered = _hf_logprobs(model, prompt, sample.token_ids, 1.0)
            assert not torch.allclose(hf, hf_untempered, atol=1e-3)


def test_seeded_sampling_of_more_prompt_tokens_than_one_engine_step(synced):
    """More prompt tokens than one engine step takes, every request seeded (an evaluation of
    many problems): no prompt's prefill is split on CPU, where vLLM could not rewind the
    seeded generator of a split one, and the samples repeat under the same seed."""
    from r1core.rollout.vllm_rollout import CPU_BATCHED_TOKENS

    _, engine, _, _ = synced
    prompts = [[3 + i % 90] + list(range(10, 49)) for i in range(CPU_BATCHED_TOKENS // 40 + 20)]
    assert sum(map(len, prompts)) > CPU_BATCHED_TOKENS
    first = engine.generate(prompts, n=2, max_tokens=2, temperature=1.0, seed=5)
    again = engine.generate(prompts, n=2, max_tokens=2, temperature=1.0, seed=5)
    assert len(first) == len(prompts) and all(len(g) == 2 and g[0].token_ids for g in first)
    assert [[s.token_ids for s in g] for g in first] == [[s.token_ids for s in g] for g in again]


def test_second_sync_and_coverage_checks(synced, checkpoints, fresh_reference):
    """A sync that misses a parameter, or one shard of a fused one, is refused by name;
    a complete sync afterwards restores the exact fresh-engine outputs."""
    kind, engine, _, _ = synced
    model = checkpoints(kind).updated_model
    names = [n for n, _ in ModuleWeightSource(model).iter_hf_weights()]

    class Without:
        def __init__(self, dropped):
            self.dropped = dropped

        def iter_hf_weights(self):
            for name, tensor in ModuleWeightSource(model).iter_hf_weights():
                if name != self.dropped:
                    yield name, tensor

    norm = next(n for n in names if n.endswith("post_attention_layernorm.weight"))
    with pytest.raises(RuntimeError, match="stale"):
        engine.sync_weights(Without(norm))
    k_proj = next(n for n in names if n.endswith("k_proj.weight"))
    with pytest.raises(RuntimeError, match="only some shards"):
        engine.sync_weights(Without(k_proj))
    with pytest.raises(TypeError, match="iter_hf_weights"):
        engine.sync_weights(model)

    stats = engine.sync_weights(ModuleWeightSource(model), weight_version="step-2")
    assert stats.weight_version == "step-2"
    assert greedy(engine) == fresh_reference(kind)


def test_generate_rejects_bad_input(synced):
    _, engine, _, _ = synced
    with pytest.raises(ValueError, match="exceeds max_model_len"):
        engine.generate([[1] * MAX_MODEL_LEN], n=1, max_tokens=4, temperature=1.0)
    with pytest.raises(ValueError, match="empty"):
        engine.generate([[]], n=1, max_tokens=4, temperature=1.0)


@pytest.mark.parametrize("refresh", ["refresh_tied_lm_head", "refresh_cpu_moe_prepack"])
def test_cpu_refreshes_are_what_makes_the_sync_exact(synced, checkpoints, fresh_reference,
                                                     monkeypatch, refresh):
    """Negative control for the two CPU traps. The engine goes back to the initial
    weights: without r1core's refresh, vLLM's reload leaves a tied LM head's packed copy
    (qwen2_tied) or the MoE experts' packed layout (qwen3_moe) stale, and the outputs
    differ from those the engine gave when it was started on these weights; with the
    refresh they are equal again. If the first check starts failing, vLLM now refreshes
    that part itself and the workaround can go."""
    from transformers import AutoModelForCausalLM

    from r1core.rollout import weight_transfer

    kind, engine, before, _ = synced
    applies = {"qwen2_tied": "refresh_tied_lm_head", "qwen3_moe": "refresh_cpu_moe_prepack"}
    if applies.get(kind) != refresh:
        pytest.skip(f"{refresh} does not apply to {kind}")
    initial = AutoModelForCausalLM.from_pretrained(checkpoints(kind).initial_dir,
                                                   dtype=torch.float32)
    with monkeypatch.context() as patch:
        patch.setattr(weight_transfer, refresh, lambda module: 0)
        engine.sync_weights(ModuleWeightSource(initial))
        assert greedy(engine) != before
    engine.sync_weights(ModuleWeightSource(initial))
    assert greedy(engine) == before  # back to the fresh engine's outputs, bitwise
    engine.sync_weights(ModuleWeightSource(checkpoints(kind).updated_model))
    assert greedy(engine) == fresh_reference(kind)


def test_vocabulary_of_the_wrong_shape_is_refused_and_the_engine_recovers(
        synced, checkpoints, fresh_reference):
    """A vocabulary matrix that does not fit the engine's is refused by name before any
    row is written; the update is closed and tagged incomplete, and the next complete
    sync restores the fresh-engine outputs exactly."""
    kind, engine, _, _ = synced
    model = checkpoints(kind).updated_model

    class ShortVocabulary:
        def iter_hf_weights(self):
            for name, tensor in ModuleWeightSource(model).iter_hf_weights():
                yield name, tensor[:-1] if name == "model.embed_tokens.weight" else tensor

    with pytest.raises(Exception, match="does not fit"):
        engine.sync_weights(ShortVocabulary(), weight_version="bad")
    assert engine.weight_version == "bad-incomplete"
    engine.sync_weights(ModuleWeightSource(model), weight_version="1")
    assert greedy(engine) == fresh_reference(kind)
