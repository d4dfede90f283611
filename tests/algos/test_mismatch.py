from __future__ import annotations

import pytest
import torch

from r1core.algos.mismatch import logprob_mismatch


def test_mismatch_is_over_masked_tokens_only():
    rollout = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.25, 0.0]])
    trainer = torch.tensor([[-1.5, -2.0, -9.0], [-0.25, -0.25, 7.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    out = logprob_mismatch(rollout, trainer, mask)
    assert out["logprob_mismatch_max"].item() == pytest.approx(0.5)
    assert out["logprob_mismatch_mean"].item() == pytest.approx((0.5 + 0 + 0.25 + 0) / 4)
    assert out["num_tokens"].item() == 4


def test_mismatch_empty_mask_and_dtypes():
    rollout = torch.randn(2, 5, dtype=torch.bfloat16)
    trainer = torch.randn(2, 5)
    out = logprob_mismatch(rollout, trainer, torch.zeros(2, 5, dtype=torch.bool))
    assert out["logprob_mismatch_max"].item() == 0.0 and out["logprob_mismatch_mean"].item() == 0.0
    assert out["logprob_mismatch_mean"].dtype == torch.float32


def test_mismatch_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        logprob_mismatch(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))
