"""Vocabulary-parallel fused_logprobs and fused_grpo_loss: TP=2 over gloo equals TP=1.

Two processes each hold half of the LM head (259 rows: not a multiple of any tile), run the
op with ``tp_group`` and compare, on every rank, logp, entropy, the gradient of the
replicated hidden states and the rank's slice of the weight gradient with a TP=1 run of
the same backend on the full weight, both measured against a float64 TP=1 reference.
Labels fall in both shards, so each rank sees labels outside its slice; two are ignored.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from r1core.ops import available, fused_grpo_loss, fused_logprobs
from r1core.testing import assert_close_to_reference, make_grpo_loss_inputs, make_logprobs_inputs
from r1core.testing.distributed import run_workers

WORLD = 2
BATCH, LENGTH, HIDDEN, VOCAB_LOCAL = 4, 9, 32, 259
BACKENDS = available("fused_logprobs", "cpu")


def _assert_as_accurate(name, tp, single, exact):
    """TP=2 regroups the fp32 sums by shard: its error against float64 may be twice TP=1's
    plus the fp32 floor (the shared rule), whatever the processor's summation order."""
    assert_close_to_reference(tp, exact, single, name=f"TP=2 {name}")


def _grads(fn, hidden, weight):
    hidden = hidden.clone().requires_grad_(True)
    weight = weight.clone().requires_grad_(True)
    outputs = fn(hidden, weight)
    outputs[0].backward()
    return [o.detach() for o in outputs], hidden.grad, weight.grad


def _check(rank, backend, group):
    tokens, vocab = BATCH * LENGTH, VOCAB_LOCAL * WORLD
    hidden, weight, labels = make_logprobs_inputs(tokens, HIDDEN, vocab, seed=7)
    assert ((labels < VOCAB_LOCAL).any() and (labels >= VOCAB_LOCAL).any()), "labels must span both shards"
    labels[[3, 20]] = -100  # ignored tokens: no shard's columns, zero log p and gradient
    rows = slice(rank * VOCAB_LOCAL, (rank + 1) * VOCAB_LOCAL)
    generator = torch.Generator().manual_seed(3)
    a, b = torch.randn(tokens, generator=generator), torch.randn(tokens, generator=generator)

    def logprobs(tp_group, vocab_start, impl=backend):
        def fn(h, w):
            logp, entropy = fused_logprobs(
                h, w, labels, temperature=0.9, return_entropy=True, tp_group=tp_group, vocab_start=vocab_start, backend=impl
            )
            return (a.to(logp.dtype) * logp).sum() + (b.to(logp.dtype) * entropy).sum(), logp, entropy

        return fn

    loss_inputs = make_grpo_loss_inputs(BATCH, LENGTH, seed=5)

    def grpo(tp_group, vocab_start, impl=backend):
        def fn(h, w):
            cast = {k: v.to(h.dtype) if v.is_floating_point() else v for k, v in loss_inputs.items()}
            loss, metrics = fused_grpo_loss(
                h, w, labels.view(BATCH, LENGTH), cast["old_logp"], cast["advantages"], cast["mask"],
                temperature=0.9, ref_logp=cast["ref_logp"], kl_coef=0.05, entropy_coef=0.01,
                tp_group=tp_group, vocab_start=vocab_start, backend=impl,
            )
            return loss, metrics["entropy"], metrics["kl"]

        return fn

    for make in (logprobs, grpo):
        exact_out, exact_hidden_grad, exact_weight_grad = _grads(make(None, 0, "reference"), hidden.double(), weight.double())
        single_out, single_hidden_grad, single_weight_grad = _grads(make(None, 0), hidden, weight)
        tp_out, tp_hidden_grad, tp_weight_grad = _grads(make(group, rank * VOCAB_LOCAL), hidden, weight[rows])
        for index, (single, tp, exact) in enumerate(zip(single_out, tp_out, exact_out)):
            _assert_as_accurate(f"{make.__name__} output {index}", tp, single, exact)
        _assert_as_accurate(f"{make.__name__} grad_hidden", tp_hidden_grad, single_hidden_grad, exact_hidden_grad)
        _assert_as_accurate(f"{make.__name__} grad_weight", tp_weight_grad, single_weight_grad[rows], exact_weight_grad[rows])


def _worker(rank: int, world_size: int, backend: str) -> None:
    torch.set_num_threads(1)
    _check(rank, backend, dist.group.WORLD)


@pytest.mark.distributed
@pytest.mark.parametrize("backend", BACKENDS)
def test_tp2_equals_tp1(backend):
    # Spawned workers inherit the environment, TRITON_INTERPRET included; a failing worker's
    # own traceback and native output are in the failure message.
    run_workers(_worker, WORLD, backend, timeout=600)
