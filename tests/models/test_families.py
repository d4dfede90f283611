"""Every supported family on a tiny random checkpoint written by transformers (fp32, CPU):
the policy's log-probs and entropies equal transformers', the export round trip is bit-exact,
and training gradients equal transformers' autograd."""

from __future__ import annotations

import pytest
import torch

from families import CUDA_ONLY, FAMILIES, MOE
from test_policy import hf_reference, read_all
from workload import loss_fn, micro_batches, reference_logp, token_block

CPU_FAMILIES = [kind for kind in FAMILIES if torch.cuda.is_available() or kind not in CUDA_ONLY]
#: Every family, those that need CUDA skipped (with the reason) where there is none.
ALL_FAMILIES = [pytest.param(kind, marks=pytest.mark.skipif(
    kind not in CPU_FAMILIES, reason="the policy's multi-head latent attention (Megatron-Core MLA) needs CUDA"))
    for kind in FAMILIES]


@pytest.fixture(scope="module")
def family_policies(family_checkpoints):
    from r1core.models import build_policy

    return {kind: build_policy(family_checkpoints[kind]) for kind in CPU_FAMILIES}


@pytest.mark.family_check("logprobs vs transformers")
@pytest.mark.parametrize("kind", ALL_FAMILIES)
def test_logprobs_match_transformers(family_policies, family_checkpoints, kind):
    ids = token_block(7, batch=2, seq=17)  # longer than every test window and rope band
    want, want_entropy = hf_reference(family_checkpoints[kind], ids, temperature=0.8)
    got, entropy = family_policies[kind].logprobs(ids, temperature=0.8, return_entropy=True)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    torch.testing.assert_close(entropy, want_entropy, atol=2e-5, rtol=0)
    # Packed sequences (the training layout) give each sequence its own log-probs.
    seqs = [ids[0], ids[1, :11]]
    packed = family_policies[kind].logprobs(seqs, temperature=0.8)
    torch.testing.assert_close(packed[0], want[0], atol=2e-5, rtol=0)
    short, _ = hf_reference(family_checkpoints[kind], ids[1:, :11], temperature=0.8)
    torch.testing.assert_close(packed[1, :10], short[0], atol=2e-5, rtol=0)


@pytest.mark.family_check("export bit-exact")
@pytest.mark.parametrize("kind", ALL_FAMILIES)
def test_export_round_trip_is_bit_exact(family_policies, family_checkpoints, kind, tmp_path):
    out = family_policies[kind].export_hf(tmp_path / "export")
    source, exported = read_all(family_checkpoints[kind]), read_all(out)
    assert sorted(exported) == sorted(source)
    for name, tensor in source.items():
        assert exported[name].dtype == tensor.dtype, name
        assert torch.equal(exported[name], tensor), name


@pytest.mark.family_check("gradients vs transformers")
@pytest.mark.parametrize("kind", ALL_FAMILIES)
def test_gradients_match_transformers(family_checkpoints, kind):
    """One training step's gradients (every parameter, router and experts included) equal
    those of the same loss through transformers' model."""
    from transformers import AutoModelForCausalLM

    from r1core.models import OptimConfig, build_policy
    from r1core.models.weights import gather_param
    from r1core.rollout.bridge import checkpoint_tensors

    policy = build_policy(family_checkpoints[kind], optim=OptimConfig(lr=1e-3, clip_grad=0.0))
    policy.train_step(micro_batches(), loss_fn)
    ref = AutoModelForCausalLM.from_pretrained(family_checkpoints[kind], dtype=torch.float32)
    total = 0.0
    for mb in micro_batches():
        total = total + loss_fn(reference_logp(ref, mb), None, mb)[0] / 2
    total.backward()
    # Checkpoint names of the reference gradients (transformers keeps experts fused in memory).
    grads = {name: param.grad if param.grad is not None else torch.zeros_like(param)
             for name, param in ref.named_parameters()}
    ref_grads = checkpoint_tensors(ref, grads)
    seen = set()
    for name, param in policy.model.named_parameters():
        if policy.shape.tied_embeddings and name == "output_layer.weight":
            continue
        for hf_name, grad in gather_param(name, param.grad, policy.ctx):
            torch.testing.assert_close(grad, ref_grads[hf_name], atol=3e-5, rtol=1e-4, msg=hf_name)
            seen.add(hf_name)
    assert seen == {n for n in ref_grads if not n.endswith("e_score_correction_bias")}
    if kind in MOE:
        assert any(".gate.weight" in n and ref_grads[n].abs().sum() > 0 for n in seen)


@pytest.mark.family_check("refused with reason", family="deepseek_v3")
def test_latent_attention_without_cuda_is_refused_by_name(family_checkpoints):
    from r1core.models import LayoutError, build_policy

    if torch.cuda.is_available():
        pytest.skip("CUDA builds latent attention")
    with pytest.raises(LayoutError, match="MLASelfAttention builds its rotary table"):
        build_policy(family_checkpoints["deepseek_v3"])


def test_unsupported_features_are_named():
    from r1core.models import UnsupportedModelError, parse_hf_config

    base = dict(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    cases = {
        "soft-capping": dict(base, model_type="gemma2"),
        "LongRoPE": dict(base, model_type="phi3", rope_scaling={"type": "longrope", "short_factor": [1.0]}),
        "vision tower": dict(base, model_type="gemma3"),
        "a bias on o_proj": dict(base, model_type="llama", attention_bias=True),
        "quantized": dict(base, model_type="llama", quantization_config={"quant_method": "fp8"}),
        "use_sliding_window": dict(base, model_type="qwen2", use_sliding_window=True),
        "top 2": dict(base, model_type="deepseek_v3", num_experts_per_tok=2, n_group=4, topk_group=2),
        "router_jitter_noise": dict(base, model_type="mixtral", router_jitter_noise=0.1),
        "logit soft-capping": dict(base, model_type="gemma3_text", final_logit_softcapping=30.0),
    }
    for feature, config in cases.items():
        with pytest.raises(UnsupportedModelError, match=feature):
            parse_hf_config(config)
