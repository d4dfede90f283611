"""The CPU core attention over packed sequences equals running each sequence on its own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("megatron.core")

from r1core.models.spec import _packed_causal_attention  # noqa: E402


def _one_by_one(query, key, value, lengths, scale):
    out, start = [], 0
    for n in lengths:
        q, k, v = (x[start : start + n].transpose(0, 1).unsqueeze(0) for x in (query, key, value))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
        out.append(o.squeeze(0).transpose(0, 1).reshape(n, -1))
        start += n
    return torch.cat(out)


@pytest.mark.parametrize("heads,groups", [(4, 4), (4, 2)])
@pytest.mark.parametrize("lengths", [[5], [1, 7, 3], [9, 9, 2, 1, 4]])
def test_packed_attention_equals_per_sequence(lengths, heads, groups):
    torch.manual_seed(0)
    total, dim = sum(lengths), 8
    query = torch.randn(total, heads, dim, dtype=torch.float64, requires_grad=True)
    key = torch.randn(total, groups, dim, dtype=torch.float64, requires_grad=True)
    value = torch.randn(total, groups, dim, dtype=torch.float64, requires_grad=True)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    scale = dim**-0.5

    got = _packed_causal_attention(query, key, value, cu, dropout=0.0, scale=scale)
    want = _one_by_one(query, key, value, lengths, scale)
    assert got.shape == (total, heads * dim)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)

    grad = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, (query, key, value), grad)
    want_grads = torch.autograd.grad(want, (query, key, value), grad)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_packed_attention_keeps_sequences_apart():
    """Changing one sequence's keys leaves every other sequence's output unchanged."""
    torch.manual_seed(1)
    lengths = [4, 6, 3]
    total = sum(lengths)
    query, key, value = (torch.randn(total, 2, 4) for _ in range(3))
    cu = torch.tensor([0, 4, 10, 13], dtype=torch.int32)
    base = _packed_causal_attention(query, key, value, cu, dropout=0.0, scale=0.5)
    key2 = key.clone()
    key2[4:10] = torch.randn(6, 2, 4)  # the middle sequence only
    changed = _packed_causal_attention(query, key2, value, cu, dropout=0.0, scale=0.5)
    torch.testing.assert_close(changed[:4], base[:4])
    torch.testing.assert_close(changed[10:], base[10:])
    assert not torch.allclose(changed[4:10], base[4:10])
