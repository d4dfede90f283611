"""grpo_loss: hand-computed cases, the reference against autograd through the per-token
specification, and every backend usable here against float64 truth, with tolerances set by
PyTorch's own error at the op's compute precision."""

from __future__ import annotations

import math

import pytest
import torch

from r1core.ops import AGGREGATIONS, KL_ESTIMATORS, available, grpo_loss, grpo_token_terms
from r1core.ops._backend import resolve
from r1core.ops.grpo_loss import grpo_row_backward_reference, grpo_row_stats_reference, make_clip_params
from r1core.testing import assert_close_to_reference, make_grpo_loss_inputs

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CASES = [(device, backend) for device in DEVICES for backend in available("grpo_loss", device)]
IDS = [f"{device}-{backend}" for device, backend in CASES]
HAS_TRITON = any(backend == "triton" for _, backend in CASES)
# Options of the loss beyond the defaults: KL, dual clip, truncated importance sampling.
VARIANTS = {
    "plain": {},
    "kl": {"kl_coef": 0.1},
    "dual": {"dual_clip": 3.0, "clip_high": 0.28},
    "is": {"is_cap": 2.0, "kl_coef": 0.05},
}


def naive_loss(x: dict, *, aggregation="token-mean", kl_coef=0.0, kl_estimator="k3", dual_clip=None, is_cap=None,
               clip_low=0.2, clip_high=0.2):
    """Independent whole-loss specification: per-token terms through :func:`grpo_token_terms`,
    the aggregation written out over tokens, differentiable by autograd."""
    params = make_clip_params(clip_low, clip_high, dual_clip, kl_estimator, is_cap)
    logp = x["logp"]
    advantages = x["advantages"][:, None].expand_as(logp) if x["advantages"].dim() == 1 else x["advantages"]
    terms = grpo_token_terms(logp, x["old_logp"], advantages, x["ref_logp"], x["rollout_logp"] if is_cap else None, params)
    mask = x["mask"].to(logp.dtype)
    per_token = (terms["pg"] + kl_coef * terms["kl"]) * mask
    if aggregation == "token-mean":
        return per_token.sum() / mask.sum()
    if aggregation == "seq-mean-token-sum":
        return per_token.sum(1).mean()
    if aggregation == "seq-mean-token-mean":
        nonempty = mask.sum(1) > 0
        return (per_token.sum(1)[nonempty] / mask.sum(1)[nonempty]).mean()
    return per_token.sum() / (logp.shape[0] * logp.shape[1])


def call(x: dict, backend: str, **options):
    is_cap = options.get("is_cap")
    return grpo_loss(
        x["logp"], x["old_logp"], x["advantages"], x["mask"], ref_logp=x["ref_logp"],
        rollout_logp=x["rollout_logp"] if is_cap else None, backend=backend, **options,
    )


def cast(x: dict, dtype: torch.dtype, device="cpu", requires_grad=True) -> dict:
    out = {
        k: None if v is None else v.detach().to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
        for k, v in x.items()
    }
    out["logp"].requires_grad_(requires_grad)
    return out


def assert_within(out: torch.Tensor, torch_out: torch.Tensor, truth: torch.Tensor, rel_floor: float, what: str):
    """The shared rule (:func:`r1core.testing.assert_close_to_reference`) with the floor one
    unit in the last place of ``out``'s dtype relative to each value: the loss terms span
    orders of magnitude."""
    assert_close_to_reference(out, truth.detach().double(), torch_out, floor=rel_floor, elementwise=True, name=what)


# --- hand-computed ------------------------------------------------------------------------


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
def test_hand_computed_clipping(device, backend):
    ratios = torch.tensor([[1.0, 1.5, 0.5]], dtype=torch.float64)
    x = {"logp": ratios.log(), "old_logp": torch.zeros(1, 3, dtype=torch.float64), "ref_logp": None,
         "rollout_logp": None, "mask": torch.ones(1, 3, dtype=torch.bool)}
    # A = +1: pg = max(-r, -clip(r)) = [-1, -1.2, -0.5]; token 1 is clipped high, no gradient.
    x["advantages"] = torch.ones(1, dtype=torch.float64)
    xs = cast(x, torch.float32, device)
    loss, metrics = call(xs, backend)
    loss.backward()
    torch.testing.assert_close(loss.cpu(), torch.tensor(-2.7 / 3))
    torch.testing.assert_close(xs["logp"].grad.cpu(), torch.tensor([[-1 / 3, 0.0, -0.5 / 3]]))
    assert metrics["clip_frac_high"].item() == pytest.approx(1 / 3) and metrics["clip_frac_low"].item() == 0
    assert metrics["ratio_max"].item() == pytest.approx(1.5) and metrics["ratio_mean"].item() == pytest.approx(1.0)
    # A = -1: pg = [1, 1.5, 0.8]: token 2 clipped low; dual clip 1.4 caps token 1 at 1.4.
    x["advantages"] = -x["advantages"]
    xs = cast(x, torch.float32, device)
    loss, metrics = call(xs, backend, dual_clip=1.4)
    loss.backward()
    torch.testing.assert_close(loss.cpu(), torch.tensor(3.2 / 3))
    torch.testing.assert_close(xs["logp"].grad.cpu(), torch.tensor([[1 / 3, 0.0, 0.0]]))
    assert metrics["dual_clip_frac"].item() == pytest.approx(1 / 3)
    assert metrics["clip_frac_low"].item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
def test_hand_computed_kl_and_importance_sampling(device, backend):
    logp = torch.tensor([[-1.0, -2.0]], device=device, requires_grad=True)
    ref = logp.detach() - 0.5  # logp - ref = 0.5 on both tokens
    zero = torch.zeros(1, device=device)
    mask = torch.ones(1, 2, dtype=torch.bool, device=device)
    expected = {"k1": (0.5, 1.0), "k2": (0.125, 0.5), "k3": (math.exp(-0.5) - 0.5, 1 - math.exp(-0.5))}
    for estimator, (value, slope) in expected.items():
        logp.grad = None
        loss, metrics = grpo_loss(logp, logp.detach(), zero, mask, ref_logp=ref, kl_coef=2.0, kl_estimator=estimator, backend=backend)
        loss.backward()
        assert loss.item() == pytest.approx(2 * value, rel=1e-6) and metrics["kl"].item() == pytest.approx(value, rel=1e-6)
        torch.testing.assert_close(logp.grad.cpu(), torch.full((1, 2), 2 * slope / 2))
    # Truncated IS: exp(old - rollout) = e^2 on token 0 (capped at 2), e^-1 on token 1.
    rollout = logp.detach() - torch.tensor([[2.0, -1.0]], device=device)
    logp.grad = None
    loss, _ = grpo_loss(logp, logp.detach(), torch.ones(1, device=device), mask, rollout_logp=rollout, is_cap=2.0, backend=backend)
    loss.backward()
    weights = torch.tensor([[2.0, math.exp(-1.0)]])
    torch.testing.assert_close(loss.cpu(), -weights.sum() / 2)
    torch.testing.assert_close(logp.grad.cpu(), -weights / 2)


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
def test_bad_input_raises(device, backend):
    x = cast(make_grpo_loss_inputs(2, 5), torch.float32, device)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(x["logp"], x["old_logp"], x["advantages"], x["mask"], kl_coef=0.1, backend=backend)
    with pytest.raises(ValueError, match="old_logp"):
        grpo_loss(x["logp"], x["old_logp"][:, :4], x["advantages"], x["mask"], backend=backend)
    with pytest.raises(ValueError, match="dual_clip"):
        call(x, backend, dual_clip=0.5)
    with pytest.raises(ValueError, match="aggregation"):
        call(x, backend, aggregation="sum")
    with pytest.raises(ValueError, match="kl_estimator"):
        call(x, backend, kl_estimator="k4")


# --- reference against autograd -------------------------------------------------------------


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("kl_estimator", KL_ESTIMATORS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_matches_autograd_float64(aggregation, kl_estimator, variant):
    x = make_grpo_loss_inputs(6, 23, dtype=torch.float64, spread=0.5, seed=1)
    x["mask"][2] = False  # an empty row
    options = dict(VARIANTS[variant], aggregation=aggregation, kl_estimator=kl_estimator)
    xr, xn = cast(x, torch.float64), cast(x, torch.float64)
    loss, _ = call(xr, "reference", **options)
    loss.backward()
    expected = naive_loss(xn, **options)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(xr["logp"].grad, xn["logp"].grad, rtol=1e-12, atol=1e-14)


def test_reference_metrics():
    x = cast(make_grpo_loss_inputs(5, 17, dtype=torch.float64, spread=0.6), torch.float64, requires_grad=False)
    params = make_clip_params(0.2, 0.2, 3.0, "k3", None)
    terms = grpo_token_terms(x["logp"], x["old_logp"], x["advantages"][:, None].expand_as(x["logp"]), x["ref_logp"], None, params)
    _, metrics = call(x, "reference", dual_clip=3.0, kl_coef=0.1)
    m = x["mask"]
    assert metrics["num_tokens"].item() == m.sum().item()
    for name, key in (("clip_frac_low", "clip_low"), ("clip_frac_high", "clip_high"), ("dual_clip_frac", "dual_clip")):
        assert metrics[name].item() == pytest.approx(terms[key][m].double().mean().item())
    assert metrics["ratio_mean"].item() == pytest.approx(terms["ratio"][m].mean().item())
    assert metrics["ratio_max"].item() == pytest.approx(terms["ratio"][m].max().item())
    assert metrics["kl"].item() == pytest.approx(terms["kl"][m].mean().item())
    assert all(v.dim() == 0 for v in metrics.values())
    assert 0 < metrics["clip_frac_low"].item() and 0 < metrics["clip_frac_high"].item()


# --- every backend against float64 truth ---------------------------------------------------


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_and_grad_match_truth(device, backend, dtype, variant):
    """Loss and gradient in every aggregation and KL estimator. Truth: float64 autograd on the
    same (dtype-rounded) inputs; PyTorch's error: the same autograd in float32, the op's
    compute precision, with the gradient rounded to the input dtype."""
    x = make_grpo_loss_inputs(7, 61, dtype=dtype, spread=0.5, seed=2)
    x["mask"][3] = False
    x["mask"] = x["mask"].float() * (0.5 + torch.rand(7, 61, generator=torch.Generator().manual_seed(0)))
    x["mask"] = x["mask"].to(dtype)  # token weights, rounded to the input dtype for every path
    for aggregation in AGGREGATIONS:
        for kl_estimator in KL_ESTIMATORS:
            options = dict(VARIANTS[variant], aggregation=aggregation, kl_estimator=kl_estimator)
            xb, xt, x32 = cast(x, dtype, device), cast(x, torch.float64), cast(x, torch.float32)
            loss, _ = call(xb, backend, **options)
            loss.backward()
            truth = naive_loss(xt, **options)
            truth.backward()
            ours = naive_loss(x32, **options)
            ours.backward()
            what = f"{aggregation} {kl_estimator}"
            assert loss.dtype == torch.float32 and xb["logp"].grad.dtype == dtype
            assert_within(loss, ours, truth, 2e-6, what + " loss")
            grad_floor = 2e-6 if dtype == torch.float32 else 2.0**-8
            assert_within(xb["logp"].grad, x32["logp"].grad.to(dtype), xt["logp"].grad, grad_floor, what + " grad")


SHAPES = [(1, 1), (3, 2), (97, 61), (2, 2100)]  # 2100 spans three 1024-token tiles


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{b}x{t}" for b, t in SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_primitives_match_reference(device, backend, shape, dtype):
    """Row statistics and row backward directly, with strided rows, per-token advantages,
    float masks, empty rows and non-trivial row gradients."""
    num_rows, num_cols = shape
    x = make_grpo_loss_inputs(num_rows, num_cols + 5, spread=0.6, seed=num_cols)
    # Row stride T + 5, unit column stride: slices of wider tensors.
    x = {k: (v[:, 2:2 + num_cols] if v.dim() == 2 else v) for k, v in x.items()}
    x["mask"] = x["mask"].clone()
    x["mask"][0] = False  # ratio_max of an empty row is 0
    per_token = x["advantages"][:, None] + 0.1 * torch.randn(num_rows, num_cols, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    grad_rows = torch.randn(num_rows, generator=generator), torch.randn(num_rows, generator=generator)
    _, impl = resolve("grpo_loss", backend, torch.device(device))
    combos = [
        (advantages, params)
        for advantages in (x["advantages"][:, None].expand(num_rows, num_cols), per_token)
        for params in (make_clip_params(0.2, 0.28, 3.0, "k2", 2.0), make_clip_params(0.1, 0.1, None, "k1", None))
    ]
    if num_rows > 16:  # the interpreter is slow; the many-row shape checks the fullest option set
        combos = combos[:1]
    for advantages, params in combos:
        if True:
            args = lambda d, dev: (  # noqa: E731
                x["logp"].to(dev, d), x["old_logp"].to(dev, d), advantages.to(dev, d), x["mask"].to(dev),
                x["ref_logp"].to(dev, d), x["rollout_logp"].to(dev, d) if params.is_cap else None, params,
            )
            inputs = [t.to(dtype).double() if t is not None and t.is_floating_point() else t for t in args(torch.float32, "cpu")[:6]]
            truth = grpo_row_stats_reference(*inputs, params)
            torch_out = grpo_row_stats_reference(*args(dtype, "cpu"))
            stats = impl.row_stats(*args(dtype, device))
            assert stats.shape == (num_rows, 8) and stats.dtype == torch.float32
            assert torch.equal(stats[:, 2].cpu(), torch_out[:, 2])  # token counts are exact
            assert (stats[:, 3:6].cpu() - torch_out[:, 3:6]).abs().max() <= 1  # a token at a clip bound may flip
            for column, name in ((0, "pg_sum"), (1, "kl_sum"), (6, "ratio_sum"), (7, "ratio_max")):
                assert_within(stats[:, column], torch_out[:, column], truth[:, column], 4e-6, name)
            assert stats[0, 7] == 0
            rows_dev = [g.to(device) for g in grad_rows]
            grad = impl.row_backward(*rows_dev, *args(dtype, device)[:6], params)
            assert grad.shape == shape and grad.dtype in (dtype, torch.float32)
            truth_grad = grpo_row_backward_reference(*[g.double() for g in grad_rows], *inputs, params)
            torch_grad = grpo_row_backward_reference(*grad_rows, *args(dtype, "cpu")[:6], params).to(grad.dtype)
            assert_within(grad, torch_grad, truth_grad, 2e-6 if grad.dtype == torch.float32 else 2.0**-8, "row_backward")


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
def test_float64_passthrough(device, backend):
    x = cast(make_grpo_loss_inputs(4, 33, dtype=torch.float64, spread=0.5), torch.float64, device)
    xr = cast(x, torch.float64, device)
    options = {"kl_coef": 0.1, "dual_clip": 3.0, "is_cap": 2.0, "kl_estimator": "k3"}
    loss, _ = call(x, backend, **options)
    loss.backward()
    expected, _ = call(xr, "reference", **options)
    expected.backward()
    assert loss.dtype == torch.float64 and x["logp"].grad.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(x["logp"].grad, xr["logp"].grad, rtol=1e-12, atol=1e-14)


# --- registration and compilation ----------------------------------------------------------


@pytest.mark.skipif(not HAS_TRITON, reason="the triton backend is not usable here")
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    import r1core.ops.grpo_loss_triton  # noqa: F401  (registers the ops)

    x = cast(make_grpo_loss_inputs(3, 9, spread=0.5), torch.float32, device, requires_grad=False)
    expanded = x["advantages"][:, None].expand_as(x["logp"])
    rows = torch.randn(3, device=device), torch.randn(3, device=device)
    for ref, rollout, scalars in ((None, None, (0.2, 0.2, 0.0, 2, 0.0)), (x["ref_logp"], x["rollout_logp"], (0.2, 0.28, 3.0, 1, 2.0))):
        tensors = (x["logp"], x["old_logp"], expanded, x["mask"], ref, rollout)
        torch.library.opcheck(torch.ops.r1core.grpo_row_stats_triton.default, (*tensors, *scalars))
        torch.library.opcheck(torch.ops.r1core.grpo_row_backward_triton.default, (*rows, *tensors, *scalars))


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
def test_torch_compile_matches_eager(device, backend):
    x = make_grpo_loss_inputs(4, 29, spread=0.5, seed=5)
    options = {"kl_coef": 0.1, "dual_clip": 3.0, "is_cap": 2.0, "aggregation": "seq-mean-token-mean"}

    def step(inputs):
        loss, metrics = call(inputs, backend, **options)
        loss.backward()
        return loss.detach(), metrics

    eager_inputs, compiled_inputs = cast(x, torch.float32, device), cast(x, torch.float32, device)
    eager_loss, eager_metrics = step(eager_inputs)
    torch._dynamo.reset()
    compiled_loss, compiled_metrics = torch.compile(step)(compiled_inputs)
    torch.testing.assert_close(compiled_loss, eager_loss)
    torch.testing.assert_close(compiled_inputs["logp"].grad, eager_inputs["logp"].grad)
    for name, value in eager_metrics.items():
        torch.testing.assert_close(compiled_metrics[name], value)
