"""fused_logprobs: every backend usable here against the float64 specification.

Tolerances: :func:`r1core.testing.assert_close_to_reference` (flash-attention's rule,
``max|impl - ref64| <= 2 * max|torch_same - ref64| + floor``) where ``torch_same`` is
:func:`logprobs_naive` (full logits) run in the inputs' dtype and ``ref64`` the same in
float64. Shapes are odd on purpose (N=97, H=48, V=1031: no size is a multiple of a tile),
and small, because the Triton kernels run in the interpreter on CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from r1core.ops import available, fused_logprobs, logprobs_naive
from r1core.ops.fused_logprobs import logprobs_backward_reference, logprobs_stats_reference
from r1core.testing import assert_close_to_reference, default_floor, make_logprobs_inputs

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CASES = [(device, backend) for device in DEVICES for backend in available("fused_logprobs", device)]
IDS = [f"{device}-{backend}" for device, backend in CASES]
TRITON_DEVICES = [device for device, backend in CASES if backend == "triton"]


def assert_within(name, actual, ref64, torch_same, dtype):
    # The floor is the input dtype's: log-probs come back in float32 whatever the input, but
    # they inherit the input's rounding of the logits.
    assert_close_to_reference(actual, ref64, torch_same, floor=default_floor(dtype), name=name)


def run(fn_logp, hidden, weight, labels, temperature, mode, logp_weight, entropy_weight):
    """Forward + backward of ``sum(a * logp) + sum(b * entropy)``; returns values and grads."""
    hidden = hidden.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    logp, entropy = fn_logp(hidden, weight, labels, temperature, mode != "logp")
    loss = torch.zeros((), dtype=torch.float64, device=hidden.device)
    if mode in ("both", "logp"):
        loss = loss + (logp.double() * logp_weight.to(hidden.device)).sum()
    if mode in ("both", "entropy"):
        loss = loss + (entropy.double() * entropy_weight.to(hidden.device)).sum()
    loss.backward()
    return logp.detach(), (None if entropy is None else entropy.detach()), hidden.grad, weight.grad


def naive(hidden, weight, labels, temperature, need_entropy):
    logp, entropy = logprobs_naive(hidden, weight, labels, temperature)
    return logp, entropy if need_entropy else None


def fused(backend):
    def fn(hidden, weight, labels, temperature, need_entropy):
        out = fused_logprobs(hidden, weight, labels, temperature=temperature, return_entropy=need_entropy, backend=backend)
        return out if need_entropy else (out, None)

    return fn


SHAPES = {
    "odd": (97, 48, 1031, 1.0, "both"),
    "temperature": (97, 48, 1031, 0.7, "both"),
    "no_entropy": (97, 48, 1031, 1.0, "logp"),
    "entropy_grad_only": (61, 48, 1031, 1.3, "entropy"),
    "vocab_below_one_tile": (7, 48, 50, 1.0, "both"),
    "one_token": (1, 48, 1031, 0.9, "both"),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize(("device", "backend"), CASES, ids=IDS)
def test_values_and_gradients_match_float64_spec(device, backend, shape, dtype):
    num_tokens, hidden_size, vocab, temperature, mode = SHAPES[shape]
    hidden, weight, labels = make_logprobs_inputs(num_tokens, hidden_size, vocab, seed=num_tokens + vocab)
    generator = torch.Generator().manual_seed(1)
    logp_weight = torch.randn(num_tokens, generator=generator, dtype=torch.float64)
    entropy_weight = torch.randn(num_tokens, generator=generator, dtype=torch.float64)
    args = (temperature, mode, logp_weight, entropy_weight)
    ref = run(naive, hidden.double(), weight.double(), labels, *args)
    same = run(naive, hidden.to(dtype), weight.to(dtype), labels, *args)
    got = run(fused(backend), hidden.to(device, dtype), weight.to(device, dtype), labels.to(device), *args)
    assert got[0].dtype == torch.float32 and got[0].shape == (num_tokens,)
    assert got[2].dtype == dtype and got[3].dtype == dtype
    for name, index in (("logp", 0), ("entropy", 1), ("grad_hidden", 2), ("grad_weight", 3)):
        if ref[index] is not None:
            assert_within(name, got[index], ref[index], same[index], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("device", "backend"), CASES, ids=IDS)
def test_invariants(device, backend, dtype):
    # A large logit scale makes near-one-hot rows, where rounding would first break them.
    hidden, weight, labels = make_logprobs_inputs(64, 32, 700, dtype=dtype, device=device, logit_scale=40.0, seed=3)
    logp, entropy = fused_logprobs(hidden, weight, labels, return_entropy=True, backend=backend)
    assert torch.isfinite(logp).all() and torch.isfinite(entropy).all()
    assert (logp <= 0).all(), "lse >= the target logit holds exactly (the max term contributes exp(0) = 1)"
    # entropy = lse - E_p[z] is a difference of nearly equal numbers on one-hot rows.
    assert (entropy >= -1e-5).all()
    assert (entropy <= math.log(700) + 1e-4).all()
    assert (entropy.min() < 0.05) and (entropy.max() > 0.5), "inputs should span peaked and flat rows"


@pytest.mark.parametrize(("device", "backend"), CASES, ids=IDS)
def test_label_outside_vocabulary_raises(device, backend):
    hidden, weight, labels = make_logprobs_inputs(5, 16, 40, device=device)
    for bad in (40, -1):
        labels_bad = labels.clone()
        labels_bad[2] = bad
        with pytest.raises(ValueError, match="outside the vocabulary"):
            fused_logprobs(hidden, weight, labels_bad, backend=backend)


@pytest.mark.parametrize(("device", "backend"), CASES, ids=IDS)
def test_torch_compile_matches_eager(device, backend):
    hidden, weight, labels = make_logprobs_inputs(33, 32, 300, device=device, seed=5)

    def loss_fn(h, w):
        logp, entropy = fused_logprobs(h, w, labels, temperature=0.8, return_entropy=True, backend=backend, validate=False)
        return (logp * 0.5).sum() + entropy.sum(), logp, entropy

    results = []
    for fn in (loss_fn, torch.compile(loss_fn, fullgraph=True)):
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        loss, logp, entropy = fn(h, w)
        loss.backward()
        results.append((logp.detach(), entropy.detach(), h.grad, w.grad))
    for eager, compiled in zip(*results):
        # Inductor fuses and reorders the fp32 arithmetic around the ops: rounding-level slack.
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=2e-5)


# --- the Triton primitives directly: splits, chunks, other shards, opcheck ------------------


def _shard_inputs(device, dtype=torch.float32):
    hidden, weight, labels = make_logprobs_inputs(45, 40, 1031, device=device, dtype=dtype, seed=11)
    # Shard-local labels as the TP path produces them: some belong to other shards.
    labels = labels - 300
    return hidden, weight, labels


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("num_splits", [1, 3, 40])
def test_triton_stats_any_split_count_matches_reference(device, num_splits):
    from r1core.kernels import fused_logprobs as kernels

    hidden, weight, labels = _shard_inputs(device)
    assert (labels < 0).any() and (labels >= 0).any()
    # 40 splits > 9 vocabulary tiles: most splits are empty and must merge as neutral.
    stats = kernels.logprobs_stats(hidden, weight, labels, 1.25, True, num_splits=num_splits)
    same = logprobs_stats_reference(hidden, weight, labels, 1.25, True)
    exact = logprobs_stats_reference(hidden.double().cpu(), weight.double().cpu(), labels.cpu(), 1.25, True)
    outside = (labels < 0) | (labels >= weight.shape[0])
    assert (stats[3][outside] == 0).all(), "labels of other shards contribute no target logit"
    # Split boundaries change the max each partial sum is relative to: compare in lse form.
    lse_form = lambda t: t[0] + t[1].log()  # noqa: E731
    mean_logit = lambda t: t[2] / t[1]  # noqa: E731
    assert_close_to_reference(lse_form(stats), lse_form(exact), lse_form(same), name="lse")
    assert_close_to_reference(mean_logit(stats), mean_logit(exact), mean_logit(same), name="E_p[z]")
    assert_close_to_reference(stats[3], exact[3], same[3], name="target logit")


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("chunk_columns", [256, 768, 4096])
@pytest.mark.parametrize("with_entropy", [True, False])
def test_triton_backward_chunked_over_vocabulary_matches_reference(device, chunk_columns, with_entropy):
    from r1core.kernels import fused_logprobs as kernels

    hidden, weight, labels = _shard_inputs(device)
    stats = logprobs_stats_reference(hidden, weight, labels, 0.8, True)
    lse = stats[0] + stats[1].log()
    entropy = lse - stats[2] / stats[1]
    generator = torch.Generator().manual_seed(2)
    grad_logp = torch.randn(hidden.shape[0], generator=generator).to(device)
    grad_entropy = torch.randn(hidden.shape[0], generator=generator).to(device) if with_entropy else lse.new_empty(0)
    budget = chunk_columns * hidden.shape[0] * hidden.element_size()  # 1031 columns: 5, 2 and 1 chunks
    got = kernels.logprobs_backward(hidden, weight, labels, lse, entropy, grad_logp, grad_entropy, 0.8, chunk_budget_bytes=budget)
    # Both the kernel and PyTorch's fp32 reference are approximations: each is measured
    # against float64 on the same inputs, and the kernel may be twice as far off as PyTorch.
    same = logprobs_backward_reference(hidden, weight, labels, lse, entropy, grad_logp, grad_entropy, 0.8)
    as64 = lambda t: t.double().cpu()  # noqa: E731
    exact = logprobs_backward_reference(
        as64(hidden), as64(weight), labels.cpu(), as64(lse), as64(entropy), as64(grad_logp), as64(grad_entropy), 0.8
    )
    for name, actual, torch_same, reference in zip(("grad_hidden", "grad_weight"), got, same, exact):
        assert actual.dtype == torch.float32
        assert_close_to_reference(actual, reference, torch_same, name=name)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_triton_rejects_float64(device):
    hidden, weight, labels = make_logprobs_inputs(4, 16, 40, device=device, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        fused_logprobs(hidden, weight, labels, backend="triton")


@pytest.mark.parametrize("variant", ["triton", "triton_persistent"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_opcheck_triton_custom_ops(device, dtype, variant):
    import r1core.ops.fused_logprobs_triton  # noqa: F401  (registers the ops)

    stats_op = getattr(torch.ops.r1core, f"logprobs_stats_{variant}")
    backward_op = getattr(torch.ops.r1core, f"logprobs_backward_{variant}")
    hidden, weight, labels = _shard_inputs(device, dtype)
    hidden, weight, labels = hidden[:19], weight[:300], labels[:19]
    torch.library.opcheck(stats_op.default, (hidden, weight, labels, 0.5, True))
    stats = stats_op(hidden, weight, labels, 0.5, True)
    lse = stats[0] + stats[1].log()
    entropy = lse - stats[2] / stats[1]
    grad = torch.linspace(-1, 1, hidden.shape[0], device=device)
    args = (hidden, weight, labels, lse, entropy, grad, grad.flip(0), 0.5)
    torch.library.opcheck(backward_op.default, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_triton_fp32_accumulation_kernel(device, dtype):
    """``acc += a @ b`` into an fp32 accumulator with 16-bit operands (the backward's path where
    torch lacks an fp32-output addmm): the sum stays fp32 across calls."""
    from r1core.kernels import fused_logprobs as kernels

    generator = torch.Generator().manual_seed(0)
    start = torch.randn(45, 40, generator=generator)
    a_parts = [torch.randn(45, k, generator=generator).to(dtype) for k in (33, 70)]
    b_parts = [torch.randn(k, 40, generator=generator).to(dtype) for k in (33, 70)]
    acc = start.clone().to(device)
    same = start.clone()
    exact = start.double()
    for a, b in zip(a_parts, b_parts):
        kernels.accumulate_matmul_triton(acc, a.to(device), b.to(device))
        same += a.float() @ b.float()
        exact += a.double() @ b.double()
    assert acc.dtype == torch.float32
    assert_close_to_reference(acc, exact, same, name="acc")


def test_fp32_accumulation_path_is_reported():
    from r1core.kernels import fused_logprobs as kernels

    assert kernels.fp32_accumulation_path(torch.device("cpu")) == "fp32 upcast"
    if torch.cuda.is_available():
        assert kernels.fp32_accumulation_path(torch.device("cuda")) in ("torch addmm(out_dtype=float32)", "triton accumulate kernel")


# --- ignore_index ---------------------------------------------------------------------------


@pytest.mark.parametrize("ignore_index", [-100, 7])
@pytest.mark.parametrize(("device", "backend"), CASES, ids=IDS)
def test_ignored_labels_give_zero_and_no_gradient(device, backend, ignore_index):
    """Tokens labelled ``ignore_index``: log p 0, entropy 0, no gradient; the other tokens are
    exactly what they are without the ignored ones (7 is an ordinary token id here, so any
    integer works as the ignore index, as in Hugging Face's losses)."""
    hidden, weight, labels = make_logprobs_inputs(23, 32, 300, device=device, seed=8)
    ignored = torch.zeros(23, dtype=torch.bool, device=device)
    ignored[[0, 5, 6, 22]] = True
    labels = torch.where(ignored, ignore_index, labels.masked_fill(labels == ignore_index, 8))
    a = torch.linspace(-1, 1, 23, device=device)

    def step(h, w, lab, backend=backend):
        h, w = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
        logp, entropy = fused_logprobs(
            h, w, lab, temperature=0.9, return_entropy=True, backend=backend, ignore_index=ignore_index
        )
        ((a[: lab.shape[0]].to(h) * logp).sum() + entropy.sum()).backward()
        return logp.detach(), entropy.detach(), h.grad, w.grad

    logp, entropy, grad_hidden, grad_weight = step(hidden, weight, labels)
    assert (logp[ignored] == 0).all() and (entropy[ignored] == 0).all()
    assert (grad_hidden[ignored] == 0).all()
    assert torch.isfinite(grad_weight).all() and (logp[~ignored] < 0).all()
    kept = (~ignored).nonzero().squeeze(1)
    a = a[kept]
    without = step(hidden[kept], weight, labels[kept])
    exact = step(hidden[kept].double().cpu(), weight.double().cpu(), labels[kept].cpu(), backend="reference")
    for name, got, same, spec in zip(("logp", "entropy", "grad_hidden", "grad_weight"),
                                     (logp[kept], entropy[kept], grad_hidden[kept], grad_weight), without, exact):
        # The weight gradient's sums are regrouped without the ignored rows: both runs are
        # measured against float64 rather than against each other.
        assert_close_to_reference(got, spec, same, name=name)


@pytest.mark.parametrize(("device", "backend"), CASES, ids=IDS)
def test_ignore_index_passes_validation_other_negatives_do_not(device, backend):
    hidden, weight, labels = make_logprobs_inputs(5, 16, 40, device=device)
    labels[1] = -100
    assert fused_logprobs(hidden, weight, labels, backend=backend)[1] == 0
    labels[2] = -1
    with pytest.raises(ValueError, match="outside the vocabulary.*ignore_index -100"):
        fused_logprobs(hidden, weight, labels, backend=backend)
