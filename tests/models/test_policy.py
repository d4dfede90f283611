"""Single-process proofs: log-probs against transformers, packing, export round trip, training
step, MoE routing replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workload import VOCAB, loss_fn, micro_batches, reference_logp, token_block

from r1core.batch import MicroBatch


@pytest.fixture(scope="module")
def policies(checkpoints):
    from r1core.models import build_policy

    return {kind: build_policy(path) for kind, path in checkpoints.items()}


def hf_reference(path: Path, ids: torch.Tensor, temperature: float = 1.0):
    """transformers' log_softmax(logits / T) at the next tokens, and the entropy."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(ids).logits.float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)[:, :-1]
    logp = logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


@pytest.mark.parametrize("kind", ["qwen2", "qwen2_tied", "qwen3_moe"])
def test_logprobs_match_transformers(policies, checkpoints, kind):
    ids = token_block(0, batch=3, seq=16)
    want, _ = hf_reference(checkpoints[kind], ids)
    got = policies[kind].logprobs(ids)
    assert got.shape == (3, 15) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert (got <= 0).all()


@pytest.mark.parametrize("kind", ["qwen2", "qwen3_moe"])
def test_temperature_and_entropy_match_transformers(policies, checkpoints, kind):
    ids = token_block(4, batch=2, seq=10)
    want_logp, want_entropy = hf_reference(checkpoints[kind], ids, temperature=0.7)
    logp, entropy = policies[kind].logprobs(ids, temperature=0.7, return_entropy=True)
    torch.testing.assert_close(logp, want_logp, atol=1e-4, rtol=0)
    torch.testing.assert_close(entropy, want_entropy, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["qwen2", "qwen3_moe"])
def test_packed_sequences_equal_separate_runs(policies, checkpoints, kind):
    """Packing (list input or lengths) gives each sequence the log-probs it has alone."""
    seqs = [token_block(5 + i, batch=1, seq=n)[0] for i, n in enumerate([13, 4, 9])]
    packed = policies[kind].logprobs(seqs)
    assert packed.shape == (3, 12)
    for i, seq in enumerate(seqs):
        want, _ = hf_reference(checkpoints[kind], seq[None])
        n = seq.numel() - 1
        torch.testing.assert_close(packed[i, :n], want[0], atol=1e-4, rtol=0)
        assert (packed[i, n:] == 0).all()
    block = torch.zeros(3, 13, dtype=torch.long)
    for i, seq in enumerate(seqs):
        block[i, : seq.numel()] = seq
    by_lengths = policies[kind].logprobs(block, lengths=torch.tensor([13, 4, 9]))
    torch.testing.assert_close(by_lengths, packed, atol=1e-6, rtol=0)


def test_sharded_checkpoint_loads(sharded_checkpoint, checkpoints):
    from r1core.models import build_policy

    assert (sharded_checkpoint / "model.safetensors.index.json").is_file()
    ids = token_block(0)
    want, _ = hf_reference(checkpoints["qwen2"], ids)
    torch.testing.assert_close(build_policy(sharded_checkpoint).logprobs(ids), want, atol=1e-4, rtol=0)


def read_all(path: Path) -> dict[str, torch.Tensor]:
    from r1core.models.weights import SafetensorsReader

    reader = SafetensorsReader(path)
    return {k: reader.get(k) for k in reader.keys()}


@pytest.mark.parametrize("kind", ["qwen2", "qwen2_tied", "qwen3_moe"])
def test_export_round_trip_is_bit_exact(policies, checkpoints, kind, tmp_path):
    from transformers import AutoModelForCausalLM

    out = policies[kind].export_hf(tmp_path / "export")
    source, exported = read_all(checkpoints[kind]), read_all(out)
    assert sorted(exported) == sorted(source)
    for name, tensor in source.items():
        assert exported[name].dtype == tensor.dtype, name
        assert torch.equal(exported[name], tensor), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == json.loads((checkpoints[kind] / "config.json").read_text())["model_type"]
    # transformers loads the export and computes the same log-probs.
    ids = token_block(0)
    want, _ = hf_reference(checkpoints[kind], ids)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(ids).logits
    got = torch.log_softmax(logits, -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_iter_hf_weights_yields_source_tensors(policies, checkpoints):
    source = read_all(checkpoints["qwen3_moe"])
    seen = {}
    for name, tensor in policies["qwen3_moe"].iter_hf_weights():
        assert name not in seen, f"{name} yielded twice"
        seen[name] = tensor
    assert sorted(seen) == sorted(source)
    assert all(torch.equal(seen[k], source[k]) for k in source)


def test_train_step_matches_autograd_on_transformers(checkpoints):
    """Gradients of one step equal those of the same loss through transformers' model."""
    from transformers import AutoModelForCausalLM

    from r1core.models import OptimConfig, build_policy

    policy = build_policy(checkpoints["qwen2"], optim=OptimConfig(lr=1e-3, clip_grad=0.0))
    metrics = policy.train_step(micro_batches(), loss_fn)
    assert {"loss", "grad_norm", "lr", "entropy", "pg"} <= set(metrics)

    ref = AutoModelForCausalLM.from_pretrained(checkpoints["qwen2"], dtype=torch.float32)
    total = 0.0
    for mb in micro_batches():
        loss, _ = loss_fn(reference_logp(ref, mb), None, mb)
        total = total + loss / 2
    total.backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}
    from r1core.models.weights import gather_param

    # The policy's gradients were consumed by the optimiser step but are kept on .grad.
    for name, param in policy.model.named_parameters():
        for hf_name, grad in gather_param(name, param.grad, policy.ctx):
            torch.testing.assert_close(grad, ref_grads[hf_name], atol=2e-5, rtol=1e-4, msg=hf_name)
    # Packed micro-batch: padding positions of the [B, T] block got no gradient (checked by
    # equality above since the reference ran the unpadded prefix only through the mask).
    assert float(metrics["grad_norm"]) > 0


def test_train_step_lowers_the_loss(checkpoints):
    from r1core.models import OptimConfig, build_policy

    policy = build_policy(checkpoints["qwen2_tied"], optim=OptimConfig(lr=3e-3, clip_grad=1.0))
    batches = micro_batches()
    first = policy.train_step(batches, loss_fn)["loss"]
    for _ in range(3):
        last = policy.train_step(batches, loss_fn)["loss"]
    assert float(last) < float(first)


def per_sample_routes(recorded: list[list[torch.Tensor]], lengths: list[int], keep: int = 0) -> list[torch.Tensor]:
    """Recorded packed routes (``[layer][forward] -> [total, k]``) -> per sample
    ``[length - keep, layers, k]`` (the format of ``RolloutSample.routes``)."""
    stacked = torch.stack([layer[0] for layer in recorded], dim=1)  # [total, layers, k]
    out, start = [], 0
    for n in lengths:
        out.append(stacked[start : start + n - keep].clone())
        start += n
    return out


def test_routing_replay(checkpoints):
    from r1core.models import build_policy

    policy = build_policy(checkpoints["qwen3_moe"])
    assert policy.routing.num_layers == 2 and policy.moe_layer_indices() == [0, 1]
    seqs = [token_block(3 + i, batch=1, seq=n)[0] for i, n in enumerate([9, 6])]
    with policy.record_routing() as recorded:
        base = policy.logprobs(seqs)
    assert [len(r) for r in recorded] == [1, 1] and recorded[0][0].shape == (15, 2)
    # Per-sample routes without each sample's last position (as a rollout engine returns them):
    # those positions route freely, every other one replays, and the result is unchanged.
    routes = per_sample_routes(recorded, [9, 6], keep=1)
    assert routes[0].shape == (8, 2, 2)
    with policy.record_routing() as used:
        replayed = policy.logprobs(seqs, routes=routes)
    torch.testing.assert_close(replayed, base, atol=0, rtol=0)
    assert torch.equal(used[0][0], recorded[0][0]) and torch.equal(used[1][0], recorded[1][0])
    # Forcing other experts changes the result: the replay really drives the routing, and the
    # experts used are exactly the ones given.
    flipped = [(r + 1) % 4 for r in routes]
    with policy.record_routing() as used:
        forced = policy.logprobs(seqs, routes=flipped)
    assert (forced - base).abs().max() > 1e-3
    assert torch.equal(used[0][0][:8], flipped[0][:, 0]) and torch.equal(used[1][0][9:14], flipped[1][:, 1])
    # Replay in training: gradients flow to the router through the replayed experts' scores.
    mask = torch.zeros(2, 8)
    mask[0], mask[1, :5] = 1.0, 1.0
    mbs = [MicroBatch(seqs, mask, advantages=mask * torch.tensor([[1.0], [-1.0]]), routes=flipped)]
    with policy.record_routing() as used:
        policy.train_step(mbs, loss_fn)
    assert torch.equal(used[0][0][:8], flipped[0][:, 0])
    router = policy.model.decoder.layers[0].mlp.router.weight
    assert router.grad is not None and router.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="MoE layers"):
        with policy.replay_routing([recorded[0][0]]):
            pass
    with pytest.raises(ValueError, match="routes of sample 0 have shape"):
        policy.logprobs(seqs, routes=[r[:, :, :1] for r in routes])


def test_bad_inputs_are_named(policies):
    policy = policies["qwen2"]
    with pytest.raises(ValueError, match="lengths"):
        policy.logprobs(token_block(0), lengths=torch.tensor([13, 2]))
    with pytest.raises(ValueError, match="temperature"):
        policy.logprobs(token_block(0), temperature=0.0)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        policy.logprobs(torch.zeros(5, dtype=torch.long))
    assert VOCAB == policy.shape.vocab_size


def test_moe_train_step_gradients_match_transformers(checkpoints):
    """Router and expert gradients of the MoE model equal transformers' autograd."""
    from transformers import AutoModelForCausalLM

    from r1core.models import OptimConfig, build_policy
    from r1core.models.weights import gather_param

    policy = build_policy(checkpoints["qwen3_moe"], optim=OptimConfig(lr=1e-3, clip_grad=0.0))
    policy.train_step(micro_batches(), loss_fn)
    ref = AutoModelForCausalLM.from_pretrained(checkpoints["qwen3_moe"], dtype=torch.float32)
    total = 0.0
    for mb in micro_batches():
        total = total + loss_fn(reference_logp(ref, mb), None, mb)[0] / 2
    total.backward()
    ref_grads = {}
    for name, param in ref.named_parameters():
        if name.endswith("mlp.experts.gate_up_proj"):  # transformers 5 fuses experts in memory
            prefix = name[: -len("gate_up_proj")]
            for e, fused in enumerate(param.grad):
                gate, up = fused.chunk(2, dim=0)
                ref_grads[f"{prefix}{e}.gate_proj.weight"] = gate
                ref_grads[f"{prefix}{e}.up_proj.weight"] = up
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e, down in enumerate(param.grad):
                ref_grads[f"{prefix}{e}.down_proj.weight"] = down
        else:
            ref_grads[name] = param.grad
    seen = set()
    for name, param in policy.model.named_parameters():
        for hf_name, grad in gather_param(name, param.grad, policy.ctx):
            torch.testing.assert_close(grad, ref_grads[hf_name], atol=2e-5, rtol=1e-4, msg=hf_name)
            seen.add(hf_name)
    assert seen == set(ref_grads)
    assert any("mlp.gate.weight" in n and ref_grads[n].abs().sum() > 0 for n in seen)


def test_state_dict_restores_training_bit_for_bit(checkpoints):
    """A checkpoint of model and optimiser taken mid-run continues exactly like the run."""
    from r1core.models import OptimConfig, build_policy

    policy = build_policy(checkpoints["qwen2_tied"], optim=OptimConfig(lr=3e-3))
    batches = micro_batches()
    policy.train_step(batches, loss_fn)
    saved = policy.state_dict()
    policy.train_step(batches, loss_fn)
    expected = policy.logprobs(token_block(0))
    policy.load_state_dict(saved)
    policy.train_step(batches, loss_fn)
    assert torch.equal(policy.logprobs(token_block(0)), expected)
    # The snapshot is independent of the live optimiser state that later steps update.
    assert saved["optimizer"]["state"], "the optimiser state was not captured"
