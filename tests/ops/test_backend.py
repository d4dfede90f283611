"""Backend selection: automatic choice, explicit choice, and the errors for impossible ones."""

import pytest
import torch

from r1core.ops import _backend, available, fused_logprobs, group_advantages, grpo_loss
from r1core.testing import make_logprobs_inputs


def test_reference_is_always_available_on_cpu():
    for op in ("fused_logprobs", "group_advantages", "grpo_loss"):
        backends = available(op, "cpu")
        assert "reference" in backends
        assert "cuda" not in backends  # CUDA kernels never run on CPU tensors


def test_unknown_backend_names_the_valid_ones():
    hidden, weight, labels = make_logprobs_inputs(4, 8, 16)
    with pytest.raises(ValueError, match="unknown backend 'fast'.*reference"):
        fused_logprobs(hidden, weight, labels, backend="fast")


def test_cuda_backend_on_cpu_tensors_says_why():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    with pytest.raises(RuntimeError, match="cuda"):
        group_advantages(rewards, group_size=2, backend="cuda")


def test_triton_without_cuda_or_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = _backend._usable("grpo_loss", "triton", torch.device("cpu"))
    if "triton" in _backend._IMPLS.get("grpo_loss", {}):
        assert reason is not None and "TRITON_INTERPRET" in reason
    else:
        assert reason is not None


def test_auto_choice_is_the_first_usable_preference():
    name, _ = _backend.resolve("grpo_loss", None, torch.device("cpu"))
    assert name == available("grpo_loss", "cpu")[0]


def test_explicit_reference_matches_auto():
    inputs = dict(
        logp=torch.tensor([[-1.0, -0.5]]),
        old_logp=torch.tensor([[-1.1, -0.4]]),
        advantages=torch.tensor([1.0]),
        mask=torch.tensor([[True, True]]),
    )
    auto, _ = grpo_loss(**inputs)
    ref, _ = grpo_loss(**inputs, backend="reference")
    torch.testing.assert_close(auto, ref)
