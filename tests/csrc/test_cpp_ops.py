"""The cpp backend (r1core._C's CPU kernels) against the PyTorch reference.

Values and gradients on odd shapes, float32 / bfloat16 / float64, every switch of the GRPO
loss and every advantage mode; torch.library.opcheck on every op; a torch.compile trace.
Tolerances follow the project rule: the kernel's error against a float64 computation on
the same input values may be at most twice the reference backend's, plus a noise floor.
"""

from __future__ import annotations

import pytest
import torch

import r1core.ops as ops
from r1core.ops.group_advantages import MODES, dense_group_index, group_advantages_reference
from r1core.ops.grpo_loss import ClipParams, grpo_row_backward_reference, grpo_row_stats_reference
from r1core.testing import assert_close_to_reference, default_floor, make_group_rewards, make_grpo_loss_inputs, make_logprobs_inputs
from r1core.ops.fused_logprobs import logprobs_backward_reference, logprobs_stats_reference

NUM_TOKENS, HIDDEN, VOCAB = 97, 48, 1031  # none a multiple of a tile or vector width
BATCH, LENGTH = 97, 61
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 1e-5, torch.float64: 1e-11}


def assert_as_accurate(kernel: torch.Tensor, reference: torch.Tensor, exact: torch.Tensor, floor: float) -> None:
    """The shared rule against the float64 ``exact``: at most twice ``reference``'s error, plus
    ``floor`` at unit scale (:func:`r1core.testing.assert_close_to_reference`)."""
    assert_close_to_reference(kernel, exact.double(), reference, floor=floor)


@pytest.fixture(autouse=True)
def _extension(cpp):
    return cpp


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("need_entropy", [True, False])
def test_logprobs_stats_and_backward_match_reference(cpp, dtype, need_entropy):
    hidden, weight, labels = make_logprobs_inputs(NUM_TOKENS, HIDDEN, VOCAB, dtype=dtype, seed=1)
    labels[7] = VOCAB + 3  # another shard's token: contributes 0 to the target row
    inv_t = 1 / 0.7
    stats = cpp.logprobs_stats(hidden, weight, labels, inv_t, need_entropy)
    reference = logprobs_stats_reference(hidden, weight, labels, inv_t, need_entropy)
    exact = logprobs_stats_reference(hidden.double(), weight.double(), labels, inv_t, need_entropy)
    assert stats.dtype == reference.dtype and stats.shape == (4, NUM_TOKENS)
    # Row 0 (the max) and row 3 (target logit) are logits; rows 1-2 are sums over V.
    for row in range(4):
        assert_as_accurate(stats[row], reference[row], exact[row], FLOOR[dtype])
    assert stats[3, 7] == 0

    lse = exact[0] + exact[1].log()
    entropy = lse - exact[2] / exact[1]
    generator = torch.Generator().manual_seed(2)
    grad_logp = torch.randn(NUM_TOKENS, generator=generator, dtype=torch.float64)
    grad_entropy = torch.randn(NUM_TOKENS, generator=generator, dtype=torch.float64) if need_entropy else lse.new_empty(0)
    cast = (lambda t: t) if dtype == torch.float64 else (lambda t: t.float())
    args = (lse, entropy, grad_logp, grad_entropy)
    grad_hidden, grad_weight = cpp.logprobs_backward(hidden, weight, labels, *map(cast, args), inv_t)
    ref_hidden, ref_weight = logprobs_backward_reference(hidden, weight, labels, *map(cast, args), inv_t)
    exact_hidden, exact_weight = logprobs_backward_reference(hidden.double(), weight.double(), labels, *args, inv_t)
    assert grad_hidden.dtype == dtype and grad_weight.dtype == dtype
    assert grad_hidden.shape == hidden.shape and grad_weight.shape == weight.shape
    assert_as_accurate(grad_hidden, ref_hidden, exact_hidden, FLOOR[dtype])
    assert_as_accurate(grad_weight, ref_weight, exact_weight, FLOOR[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_logprobs_autograd_through_cpp_backend(dtype):
    hidden, weight, labels = make_logprobs_inputs(NUM_TOKENS, HIDDEN, VOCAB, dtype=dtype, seed=3)
    results = {}
    for backend, h, w in (("cpp", hidden, weight), ("reference", hidden, weight), ("exact", hidden.double(), weight.double())):
        h, w = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
        logp, entropy = ops.fused_logprobs(
            h, w, labels, temperature=0.9, return_entropy=True, backend="reference" if backend == "exact" else backend
        )
        (logp.sum() + 0.5 * entropy.sum()).backward()
        results[backend] = (logp.detach(), entropy.detach(), h.grad, w.grad)
    for name, got, same, exact in zip(("logp", "entropy", "grad_hidden", "grad_weight"), *results.values()):
        # bf16 gradients are rounded to bf16 on the way out: the bf16 floor covers that.
        assert_close_to_reference(got, exact, same, floor=max(FLOOR[dtype], default_floor(got.dtype)), name=name)
    assert (results["cpp"][0] <= 0).all()


def test_logprobs_edge_shapes(cpp):
    for num_tokens, vocab in ((1, 1), (3, 1025), (300, 7)):
        hidden, weight, labels = make_logprobs_inputs(num_tokens, 5, vocab, seed=4)
        assert_as_accurate(cpp.logprobs_stats(hidden, weight, labels, 1.0, True),
                           logprobs_stats_reference(hidden, weight, labels, 1.0, True),
                           logprobs_stats_reference(hidden.double(), weight.double(), labels, 1.0, True), FLOOR[torch.float32])
    empty = cpp.logprobs_stats(torch.empty(0, 5), torch.randn(9, 5), torch.empty(0, dtype=torch.long), 1.0, True)
    assert empty.shape == (4, 0)


def test_logprobs_rejects_bad_input(cpp):
    hidden, weight, labels = make_logprobs_inputs(4, 8, 16)
    with pytest.raises(RuntimeError, match="hidden size mismatch"):
        cpp.logprobs_stats(hidden, weight[:, :4], labels, 1.0, False)
    with pytest.raises(RuntimeError, match="int64"):
        cpp.logprobs_stats(hidden, weight, labels.int(), 1.0, False)
    with pytest.raises(RuntimeError, match="share a dtype"):
        cpp.logprobs_stats(hidden, weight.double(), labels, 1.0, False)


PARAMS = [
    ClipParams(0.2, 0.2, 0.0, 2, 0.0),  # GRPO, k3
    ClipParams(0.2, 0.28, 3.0, 0, 2.0),  # DAPO clip-higher, dual clip, k1, truncated IS
    ClipParams(0.1, 0.3, 0.0, 1, 1.5),  # k2, truncated IS
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("per_token_advantage", [False, True])
@pytest.mark.parametrize("with_ref", [True, False])
def test_grpo_rows_match_reference(cpp, dtype, params, per_token_advantage, with_ref):
    inputs = make_grpo_loss_inputs(BATCH, LENGTH, dtype=dtype, seed=5, spread=0.5)
    logp, old_logp, mask = inputs["logp"], inputs["old_logp"], inputs["mask"]
    if per_token_advantage:
        advantages = inputs["advantages"][:, None] * torch.linspace(0.5, 1.5, LENGTH, dtype=dtype)
    else:
        advantages = inputs["advantages"][:, None].expand_as(logp)  # stride 0 along T
    ref_logp = inputs["ref_logp"] if with_ref else None
    args = (logp, old_logp, advantages, mask, ref_logp, inputs["rollout_logp"])
    exact_args = tuple(None if a is None else (a if a.dtype == torch.bool else a.double()) for a in args)
    stats = cpp.grpo_row_stats(*args, params)
    reference = grpo_row_stats_reference(*args, params)
    exact = grpo_row_stats_reference(*exact_args, params)
    assert stats.shape == (BATCH, 8) and stats.dtype == reference.dtype
    floor = FLOOR[dtype]
    for column in range(8):
        assert_as_accurate(stats[:, column], reference[:, column], exact[:, column], floor)
    generator = torch.Generator().manual_seed(6)
    grad_pg, grad_kl = torch.randn(2, BATCH, generator=generator, dtype=stats.dtype)
    grad = cpp.grpo_row_backward(grad_pg, grad_kl, *args, params)
    reference = grpo_row_backward_reference(grad_pg, grad_kl, *args, params)
    exact = grpo_row_backward_reference(grad_pg.double(), grad_kl.double(), *exact_args, params)
    assert grad.shape == logp.shape
    assert_as_accurate(grad, reference, exact, floor)
    assert (grad[~mask] == 0).all()


def test_grpo_rows_of_empty_sequences(cpp):
    inputs = make_grpo_loss_inputs(3, 1)
    empty = {k: v[:, :0] for k, v in inputs.items() if k != "advantages"}
    advantages = inputs["advantages"][:, None].expand(3, 0)
    params = PARAMS[1]
    stats = cpp.grpo_row_stats(empty["logp"], empty["old_logp"], advantages, empty["mask"], None, None, params)
    assert torch.equal(stats, torch.zeros(3, 8))
    grad = cpp.grpo_row_backward(torch.ones(3), torch.ones(3), empty["logp"], empty["old_logp"], advantages,
                                 empty["mask"], None, None, params)
    assert grad.shape == (3, 0)


def test_grpo_loss_float_mask_and_gradients():
    inputs = make_grpo_loss_inputs(BATCH, LENGTH, seed=7, requires_grad=True)
    mask = inputs["mask"].float() * torch.rand(BATCH, LENGTH, generator=torch.Generator().manual_seed(8))
    results = {}
    for backend, dtype in (("cpp", torch.float32), ("reference", torch.float32), ("exact", torch.float64)):
        cast = {k: v.detach().to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        cast["logp"].requires_grad_(True)
        loss, metrics = ops.grpo_loss(
            cast["logp"], cast["old_logp"], cast["advantages"], mask.to(dtype), ref_logp=cast["ref_logp"],
            kl_coef=0.05, clip_high=0.28, dual_clip=3.0, aggregation="seq-mean-token-mean",
            rollout_logp=cast["rollout_logp"], is_cap=2.0, backend="reference" if backend == "exact" else backend,
        )
        loss.backward()
        results[backend] = (loss.detach(), cast["logp"].grad, metrics)
    for index, name in ((0, "loss"), (1, "grad_logp")):
        assert_as_accurate(results["cpp"][index], results["reference"][index], results["exact"][index], FLOOR[torch.float32])
    for name, value in results["reference"][2].items():
        assert_as_accurate(results["cpp"][2][name], value, results["exact"][2][name], FLOOR[torch.float32])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_group_advantages_match_reference(cpp, mode, dtype):
    impl = cpp.GroupAdvantagesImpl()
    for binary in (True, False):
        rewards = make_group_rewards(13, 7, binary=binary, seed=9).to(dtype)
        fixed = impl.fixed_size(rewards, 7, mode, 1e-6)
        want = group_advantages_reference(rewards, torch.arange(91) // 7, mode, 1e-6)
        torch.testing.assert_close(fixed.advantages, want.advantages)
        assert torch.equal(fixed.zero_variance, want.zero_variance)
        # Ragged groups, ids not contiguous, singletons included.
        ids = torch.randint(0, 20, (91,), generator=torch.Generator().manual_seed(10))
        dense = dense_group_index(ids)
        got = impl(rewards, dense, mode, 1e-6)
        want = group_advantages_reference(rewards, dense, mode, 1e-6)
        torch.testing.assert_close(got.advantages, want.advantages)
        assert torch.equal(got.zero_variance, want.zero_variance)


def test_group_advantages_public_function_uses_cpp():
    rewards = make_group_rewards(32, 16, seed=11)
    got = ops.group_advantages(rewards, group_size=16, backend="cpp")
    want = ops.group_advantages(rewards, group_size=16, backend="reference")
    torch.testing.assert_close(got.advantages, want.advantages)
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.r1core.group_advantages(rewards[:4], torch.tensor([0, 1, 9, 2]), "grpo", 1e-6)
    with pytest.raises(RuntimeError, match="unknown advantage mode"):
        torch.ops.r1core.group_advantages_fixed(rewards, 16, "ppo", 1e-6)


def _opcheck_cases():
    hidden, weight, labels = make_logprobs_inputs(13, 24, 37, seed=12)
    stats = logprobs_stats_reference(hidden, weight, labels, 1.0, True)
    lse = stats[0] + stats[1].log()
    entropy = lse - stats[2] / stats[1]
    grad = torch.randn(13)
    inputs = make_grpo_loss_inputs(9, 11, seed=13)
    row_args = (inputs["logp"], inputs["old_logp"], inputs["advantages"][:, None].expand(9, 11), inputs["mask"],
                inputs["ref_logp"], inputs["rollout_logp"], 0.2, 0.28, 3.0, 2, 2.0)
    rewards = make_group_rewards(4, 6, seed=14)
    return [
        ("logprobs_stats", (hidden, weight, labels, 1.25, True)),
        ("logprobs_backward", (hidden, weight, labels, lse, entropy, grad, grad * 0.5, 1.25)),
        ("logprobs_backward", (hidden, weight, labels, lse, entropy, grad, torch.empty(0), 1.0)),
        ("grpo_row_stats", row_args),
        ("grpo_row_stats", row_args[:4] + (None, None) + row_args[6:]),
        ("grpo_row_backward", (torch.randn(9), torch.randn(9)) + row_args),
        ("group_advantages", (rewards, torch.arange(24) // 6, "grpo", 1e-6)),
        ("group_advantages_fixed", (rewards, 6, "rloo", 1e-6)),
    ]


@pytest.mark.parametrize("case", range(len(_opcheck_cases())))
def test_opcheck(case):
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.r1core, name).default, args)


def test_torch_compile_traces_the_ops():
    hidden, weight, labels = make_logprobs_inputs(16, 8, 33, seed=15)

    def logp(hidden, weight, labels):
        stats = torch.ops.r1core.logprobs_stats(hidden, weight, labels, 1.0, False)
        return stats[3] - (stats[0] + stats[1].log())

    compiled = torch.compile(logp, backend="aot_eager", fullgraph=True, dynamic=True)
    torch.testing.assert_close(compiled(hidden, weight, labels), ops.logprobs_naive(hidden, weight, labels)[0])
