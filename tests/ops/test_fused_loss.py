"""fused_grpo_loss against the unfused composition, and the memory claim of the fused path.

Unfused: ``grpo_loss(fused_logprobs(...))`` minus ``entropy_coef * aggregate(entropy)``,
differentiated by autograd. The fused op must give the same loss, metrics and gradients
for every aggregation, KL estimator, dual clip, entropy bonus and truncated importance
sampling, on every backend usable here.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from r1core.ops import available, fused_grpo_loss, fused_logprobs, grpo_loss
from r1core.ops.grpo_loss import aggregate
from r1core.testing import assert_close_to_reference, make_grpo_loss_inputs, make_logprobs_inputs, peak_memory_bytes

# The module, not the function of the same name that r1core.ops exports.
logprobs_module = importlib.import_module("r1core.ops.fused_logprobs")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CASES = [(device, backend) for device in DEVICES for backend in available("fused_logprobs", device)]
IDS = [f"{device}-{backend}" for device, backend in CASES]

SETTINGS = {
    "token-mean-k3": dict(aggregation="token-mean", kl_coef=0.1, kl_estimator="k3"),
    "seq-sum-k1-dual": dict(aggregation="seq-mean-token-sum", kl_coef=0.05, kl_estimator="k1", dual_clip=3.0),
    "seq-mean-k2-entropy": dict(aggregation="seq-mean-token-mean", kl_coef=0.2, kl_estimator="k2", entropy_coef=0.01),
    "drgrpo-is-temperature": dict(
        aggregation="seq-mean-token-sum-norm", norm_length=16.0, is_cap=2.0, temperature=0.7, entropy_coef=0.03
    ),
}
BATCH, LENGTH, HIDDEN, VOCAB = 6, 11, 48, 1031


def _token_inputs(hidden, weight, labels, temperature, device):
    """Old/ref/rollout log-probs near the current policy's, so that ratios straddle the clip
    range (random ones would put every token outside it)."""
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        logp = fused_logprobs(hidden, weight, labels, temperature=temperature, backend="reference").view(BATCH, LENGTH).cpu()
    noise = lambda: 0.3 * torch.randn(BATCH, LENGTH, generator=generator)  # noqa: E731
    old = (logp + noise()).clamp(max=0)
    inputs = make_grpo_loss_inputs(BATCH, LENGTH, seed=6)
    out = {
        "old_logp": old,
        "ref_logp": (logp + noise()).clamp(max=0),
        "rollout_logp": (old + 0.5 * noise()).clamp(max=0),
        "advantages": inputs["advantages"],
        "mask": inputs["mask"],
    }
    return {k: v.to(device) for k, v in out.items()}


def _unfused(hidden, weight, labels, tokens, backend, settings):
    temperature = settings.get("temperature", 1.0)
    entropy_coef = settings.get("entropy_coef", 0.0)
    logp, entropy = fused_logprobs(hidden, weight, labels.reshape(-1), temperature=temperature, return_entropy=True, backend=backend)
    is_cap = settings.get("is_cap")
    loss, metrics = grpo_loss(
        logp.view(BATCH, LENGTH), tokens["old_logp"], tokens["advantages"], tokens["mask"],
        ref_logp=tokens["ref_logp"], dual_clip=settings.get("dual_clip"), kl_coef=settings.get("kl_coef", 0.0),
        kl_estimator=settings.get("kl_estimator", "k3"), aggregation=settings["aggregation"],
        norm_length=settings.get("norm_length"), rollout_logp=tokens["rollout_logp"] if is_cap else None, is_cap=is_cap,
        backend="reference",
    )
    if entropy_coef:
        mask = tokens["mask"].to(entropy.dtype)
        rows = (entropy.view(BATCH, LENGTH) * mask).sum(1)
        entropy_mean = aggregate(rows, mask.sum(1), settings["aggregation"], settings.get("norm_length") or LENGTH)
        loss = loss - entropy_coef * entropy_mean
        metrics["entropy"] = entropy_mean.detach()
    return loss, metrics


def _fused(hidden, weight, labels, tokens, backend, settings):
    is_cap = settings.get("is_cap")
    return fused_grpo_loss(
        hidden, weight, labels, tokens["old_logp"], tokens["advantages"], tokens["mask"],
        ref_logp=tokens["ref_logp"], rollout_logp=tokens["rollout_logp"] if is_cap else None,
        backend=backend, **settings,
    )


@pytest.mark.parametrize("setting", list(SETTINGS), ids=list(SETTINGS))
@pytest.mark.parametrize(("device", "backend"), CASES, ids=IDS)
def test_fused_equals_unfused(device, backend, setting):
    settings = SETTINGS[setting]
    hidden, weight, labels = make_logprobs_inputs(BATCH * LENGTH, HIDDEN, VOCAB, device=device, seed=9)
    labels = labels.view(BATCH, LENGTH)
    tokens = _token_inputs(hidden, weight, labels.reshape(-1), settings.get("temperature", 1.0), device)
    results = []
    for fn in (_unfused, _fused):
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        loss, metrics = fn(h, w, labels, tokens, backend, settings)
        (3.0 * loss).backward()  # a non-unit upstream gradient reaches the fused backward
        results.append((loss.detach(), metrics, h.grad, w.grad))
    (loss_u, metrics_u, gh_u, gw_u), (loss_f, metrics_f, gh_f, gw_f) = results
    # The specification: the unfused composition in float64 on the same values. The fused
    # op may be off it by twice what the unfused one is, plus the float32 floor.
    h, w = hidden.double().cpu().requires_grad_(True), weight.double().cpu().requires_grad_(True)
    exact_tokens = {k: v.cpu().double() if v.is_floating_point() else v.cpu() for k, v in tokens.items()}
    loss_x, metrics_x = _unfused(h, w, labels.cpu(), exact_tokens, "reference", settings)
    (3.0 * loss_x).backward()
    assert_close_to_reference(loss_f, loss_x.detach(), loss_u, name="loss")
    assert set(metrics_f) == set(metrics_u)
    for name in metrics_u:
        assert_close_to_reference(metrics_f[name], metrics_x[name].detach().double(), metrics_u[name], name=name)
    clipped = metrics_u["clip_frac_low"] + metrics_u["clip_frac_high"]
    assert 0 < clipped < 1, "the inputs should clip some tokens and not others"
    assert_close_to_reference(gh_f, h.grad, gh_u, name="grad_hidden")
    assert_close_to_reference(gw_f, w.grad, gw_u, name="grad_weight")


# --- memory: nothing of size N x V, whatever the vocabulary -----------------------------


def _extra_bytes(backend, device, vocab, path):
    """Peak bytes of one training step of ``path`` above its inputs, minus the gradients it
    must return (hidden and weight sized); N=256 tokens, H=16."""
    batch, length, hidden_size = 8, 32, 16
    hidden, weight, labels = make_logprobs_inputs(batch * length, hidden_size, vocab, device=device, seed=1)
    tokens = make_grpo_loss_inputs(batch, length, device=device, seed=2)
    hidden.requires_grad_(True)
    weight.requires_grad_(True)

    def step():
        if path == "fused_logprobs":
            logp, entropy = fused_logprobs(hidden, weight, labels, return_entropy=True, backend=backend)
            (logp.sum() + entropy.sum()).backward()
        else:
            loss, _ = fused_grpo_loss(
                hidden, weight, labels.view(batch, length), tokens["old_logp"], tokens["advantages"], tokens["mask"],
                entropy_coef=0.01, backend=backend,
            )
            loss.backward()
        hidden.grad = weight.grad = None  # counted at the peak, not carried into the next call

    _, peak = peak_memory_bytes(step, device)
    gradients = (hidden.numel() + weight.numel()) * hidden.element_size()
    # fused_grpo_loss keeps both gradients from its forward and returns them scaled by the
    # upstream gradient: two copies of each at the peak.
    copies = 1 if path == "fused_logprobs" else 2
    return peak - copies * gradients, batch * length * vocab * 4


@pytest.mark.slow  # ~45 s per Triton case in the interpreter on 2 cores
@pytest.mark.parametrize("path", ["fused_logprobs", "fused_grpo_loss"])
@pytest.mark.parametrize(("device", "backend"), CASES, ids=IDS)
def test_peak_memory_does_not_grow_with_vocabulary(device, backend, path, monkeypatch):
    # Small vocabulary chunks (256 columns) so that both vocabularies span several chunks.
    monkeypatch.setattr(logprobs_module, "VOCAB_CHUNK", 256)
    if backend.startswith("triton"):
        from r1core.kernels import fused_logprobs as kernels

        monkeypatch.setattr(kernels, "DEFAULT_CHUNK_BUDGET_BYTES", 256 * 256 * 4)
    small, _ = _extra_bytes(backend, device, 1031, path)
    large, large_logits = _extra_bytes(backend, device, 4 * 1031, path)
    assert small > 0
    # 4x the vocabulary: the same working set (a few KiB of per-split statistics aside) ...
    assert large <= 1.05 * small + 16 * 2**10, f"extra memory grew from {small} to {large} bytes"
    # ... and far below the logits that an unfused implementation would hold.
    assert large < 0.5 * large_logits, (small, large, large_logits)


@pytest.mark.parametrize(("device", "backend"), CASES, ids=IDS)
def test_ignored_labels_leave_the_mask(device, backend):
    """Labels equal to ``ignore_index`` count as masked-out tokens: the loss, every metric
    (``num_tokens`` and the entropy included) and the gradients equal those of the same batch
    with those tokens removed from the mask."""
    settings = dict(SETTINGS["seq-mean-k2-entropy"])
    hidden, weight, labels = make_logprobs_inputs(BATCH * LENGTH, HIDDEN, VOCAB, device=device, seed=9)
    labels = labels.view(BATCH, LENGTH)
    tokens = _token_inputs(hidden, weight, labels.reshape(-1), 1.0, device)
    ignored = torch.zeros(BATCH, LENGTH, dtype=torch.bool, device=device)
    ignored[:, :3] = True  # a prompt-like prefix
    ignored[1, :] = True  # a whole row
    ignored_labels = labels.masked_fill(ignored, -100)
    results = []
    for lab, mask in ((ignored_labels, tokens["mask"]), (labels, tokens["mask"] & ~ignored)):
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        loss, metrics = fused_grpo_loss(
            h, w, lab, tokens["old_logp"], tokens["advantages"], mask, ref_logp=tokens["ref_logp"],
            backend=backend, **settings,
        )
        loss.backward()
        results.append((loss.detach(), metrics, h.grad, w.grad))
    (loss_i, metrics_i, gh_i, gw_i), (loss_m, metrics_m, gh_m, gw_m) = results
    assert metrics_i["num_tokens"].item() == (tokens["mask"] & ~ignored).sum().item() < tokens["mask"].sum().item()
    torch.testing.assert_close(loss_i, loss_m)
    for name in metrics_m:
        torch.testing.assert_close(metrics_i[name], metrics_m[name], msg=name)
    torch.testing.assert_close(gh_i, gh_m)
    torch.testing.assert_close(gw_i, gw_m)
    assert (gh_i.view(BATCH, LENGTH, -1)[ignored] == 0).all()
