"""The cuda backend (r1core._C's CUDA kernels) against the reference, on a GPU.

Marked ``gpu``: skipped without CUDA (and without a CUDA build of the extension).
"""

from __future__ import annotations

import pytest
import torch

import r1core.ops as ops
from r1core.ops.group_advantages import MODES, dense_group_index, group_advantages_reference
from r1core.ops.grpo_loss import ClipParams, grpo_row_backward_reference, grpo_row_stats_reference
from r1core.testing import assert_close_to_reference, default_floor, make_group_rewards, make_grpo_loss_inputs, make_logprobs_inputs
from r1core.ops.fused_logprobs import logprobs_backward_reference, logprobs_stats_reference

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def cuda_build(cpp):
    if not cpp.BUILD_INFO["has_cuda"]:
        pytest.skip("r1core._C was built without CUDA kernels")
    return cpp


def _assert_as_accurate(kernel, reference, exact, floor):
    """The shared rule against the float64 ``exact``: at most twice ``reference``'s error, plus
    ``floor`` at unit scale (:func:`r1core.testing.assert_close_to_reference`)."""
    assert_close_to_reference(kernel, exact.double(), reference, floor=floor)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(97, 48, 1031), (1, 64, 32000), (2048, 256, 4099), (33, 20, 7)])
def test_logprobs_stats_and_backward(cuda_build, dtype, shape):
    num_tokens, hidden_size, vocab = shape
    hidden, weight, labels = make_logprobs_inputs(*shape, dtype=dtype, device="cuda", seed=1)
    labels[0] = vocab + 5  # out of this shard
    stats = cuda_build.logprobs_stats(hidden, weight, labels, 1 / 0.7, True)
    reference = logprobs_stats_reference(hidden, weight, labels, 1 / 0.7, True)
    exact = logprobs_stats_reference(hidden.double(), weight.double(), labels, 1 / 0.7, True)
    floor = 1e-11 if dtype == torch.float64 else 2e-5
    for row in range(4):
        _assert_as_accurate(stats[row], reference[row], exact[row], floor)
    lse = exact[0] + exact[1].log()
    entropy = lse - exact[2] / exact[1]
    grad_logp = torch.randn(num_tokens, device="cuda", dtype=torch.float64)
    grad_entropy = torch.randn(num_tokens, device="cuda", dtype=torch.float64)
    cast = (lambda t: t) if dtype == torch.float64 else (lambda t: t.float())
    args = tuple(map(cast, (lse, entropy, grad_logp, grad_entropy)))
    got = cuda_build.logprobs_backward(hidden, weight, labels, *args, 1 / 0.7)
    want = logprobs_backward_reference(hidden, weight, labels, *args, 1 / 0.7)
    exact_grads = logprobs_backward_reference(hidden.double(), weight.double(), labels, lse, entropy, grad_logp, grad_entropy, 1 / 0.7)
    # 16-bit inputs: the kernel rounds dL/dlogits to the input dtype before the GEMMs (as the
    # Triton kernel does), so allow the 16-bit rounding of the gradient on top.
    floor_grad = 1e-11 if dtype == torch.float64 else (2e-5 if dtype == torch.float32 else 1e-2)
    for g, w, e in zip(got, want, exact_grads):
        assert g.dtype == dtype
        _assert_as_accurate(g, w, e, floor_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_logprobs_cuda_backend_autograd(dtype):
    hidden, weight, labels = make_logprobs_inputs(257, 128, 5003, dtype=dtype, device="cuda")
    results = {}
    for backend, h, w in (("cuda", hidden, weight), ("reference", hidden, weight), ("exact", hidden.double(), weight.double())):
        h, w = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
        logp, entropy = ops.fused_logprobs(
            h, w, labels, return_entropy=True, backend="reference" if backend == "exact" else backend
        )
        (logp.sum() - entropy.sum()).backward()
        results[backend] = (logp.detach(), entropy.detach(), h.grad, w.grad)
    for name, got, same, exact in zip(("logp", "entropy", "grad_hidden", "grad_weight"), *results.values()):
        assert_close_to_reference(got, exact, same, floor=default_floor(dtype), name=name)


@pytest.mark.parametrize("params", [ClipParams(0.2, 0.2, 0.0, 2, 0.0), ClipParams(0.2, 0.28, 3.0, 0, 2.0), ClipParams(0.1, 0.3, 0.0, 1, 1.5)])
@pytest.mark.parametrize("length", [61, 4097])
def test_grpo_rows(cuda_build, params, length):
    inputs = make_grpo_loss_inputs(97, length, device="cuda", spread=0.5)
    args = (inputs["logp"], inputs["old_logp"], inputs["advantages"][:, None].expand(97, length), inputs["mask"],
            inputs["ref_logp"], inputs["rollout_logp"])
    torch.testing.assert_close(cuda_build.grpo_row_stats(*args, params), grpo_row_stats_reference(*args, params),
                               rtol=1e-5, atol=1e-4)
    grad_pg, grad_kl = torch.randn(2, 97, device="cuda")
    torch.testing.assert_close(cuda_build.grpo_row_backward(grad_pg, grad_kl, *args, params),
                               grpo_row_backward_reference(grad_pg, grad_kl, *args, params))


@pytest.mark.parametrize("mode", MODES)
def test_group_advantages(cuda_build, mode):
    impl = cuda_build.GroupAdvantagesImpl()
    rewards = make_group_rewards(64, 16, device="cuda", binary=False)
    want = group_advantages_reference(rewards, torch.arange(1024, device="cuda") // 16, mode, 1e-6)
    got = impl.fixed_size(rewards, 16, mode, 1e-6)
    torch.testing.assert_close(got.advantages, want.advantages)
    assert torch.equal(got.zero_variance, want.zero_variance)
    ids = dense_group_index(torch.randint(0, 300, (1024,), device="cuda"))
    got = impl(rewards, ids, mode, 1e-6)
    want = group_advantages_reference(rewards, ids, mode, 1e-6)
    torch.testing.assert_close(got.advantages, want.advantages)
    assert torch.equal(got.zero_variance, want.zero_variance)


def test_opcheck_cuda():
    hidden, weight, labels = make_logprobs_inputs(13, 24, 37, device="cuda", dtype=torch.bfloat16)
    torch.library.opcheck(torch.ops.r1core.logprobs_stats.default, (hidden, weight, labels, 1.0, True))
    rewards = make_group_rewards(4, 6, device="cuda")
    torch.library.opcheck(torch.ops.r1core.group_advantages_fixed.default, (rewards, 6, "grpo", 1e-6))


def test_backward_memory_measured_within_plan_and_512_mib(cuda_build):
    """The measured variant of tests/csrc/test_extension_build.py's plan test: the CUDA
    backward at N=16384, H=4096, V=151936, bf16 allocates what its plan says, <= 512 MiB
    beyond its inputs and returned gradients, and writes every row of grad_weight."""
    tokens, hidden_size, vocab = 16384, 4096, 151936
    hidden, weight, labels = make_logprobs_inputs(tokens, hidden_size, vocab, dtype=torch.bfloat16, device="cuda")
    stats = cuda_build.logprobs_stats(hidden, weight, labels, 1.0, True)
    lse = stats[0] + stats[1].log()
    entropy = lse - stats[2] / stats[1]
    grad = torch.randn(tokens, device="cuda")
    torch.cuda.synchronize()
    cuda_build.logprobs_backward(hidden, weight, labels, lse, entropy, grad, grad, 1.0)  # cuBLAS workspaces
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    grad_hidden, grad_weight = cuda_build.logprobs_backward(hidden, weight, labels, lse, entropy, grad, grad, 1.0)
    torch.cuda.synchronize()
    outputs = grad_hidden.numel() * 2 + grad_weight.numel() * 2
    extra = torch.cuda.max_memory_allocated() - base - outputs
    plan = cuda_build._C.logprobs_backward_plan(tokens, vocab, hidden_size, 2)
    assert extra <= plan["peak_extra_bytes_with_temporary"] + 8 * 2**20, (extra / 2**20, plan)
    assert extra <= 512 * 2**20
    assert torch.isfinite(grad_weight).all()  # no row left unwritten (no zero fill to hide one)


@pytest.mark.parametrize("ignore_index", [-100])
def test_cuda_backend_ignore_index(cuda_build, ignore_index):
    hidden, weight, labels = make_logprobs_inputs(64, 32, 999, device="cuda", requires_grad=True)
    labels[::5] = ignore_index
    logp, entropy = ops.fused_logprobs(hidden, weight, labels, return_entropy=True, backend="cuda")
    (logp.sum() + entropy.sum()).backward()
    assert (logp[::5] == 0).all() and (entropy[::5] == 0).all() and (hidden.grad[::5] == 0).all()
