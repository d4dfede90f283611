"""Engine-side checks that need no engine: which parameters a complete sync must cover, and
when rollout routing replay can be asked of vLLM."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm")


def test_derived_latent_attention_parameters_are_not_expected():
    from r1core.rollout.weight_transfer import expected_parameters

    model = torch.nn.Module()
    model.attn = torch.nn.Module()
    model.attn.kv_b_proj = torch.nn.Linear(4, 4)
    model.attn.W_UK_T = torch.nn.Parameter(torch.zeros(2))
    model.attn.W_UV = torch.nn.Parameter(torch.zeros(2))
    assert expected_parameters(model) == {"attn.kv_b_proj.weight", "attn.kv_b_proj.bias"}


def test_routing_replay_is_on_only_where_vllm_can_capture():
    from r1core.rollout.vllm_rollout import _routing_replay_enabled
    from vllm.triton_utils import HAS_TRITON

    assert _routing_replay_enabled(None, moe=False) is False
    assert _routing_replay_enabled(True, moe=False) is False
    capture = bool(HAS_TRITON) and torch.cuda.is_available()
    assert _routing_replay_enabled(None, moe=True) is capture
    if not capture:
        with pytest.raises(ValueError, match="Model Runner V2"):
            _routing_replay_enabled(True, moe=True)


def test_console_filter_drops_only_the_messages_listed_as_harmless():
    import logging

    from r1core.rollout.vllm_rollout import HarmlessVLLMMessages

    def shown(message: str, *args) -> bool:
        record = logging.LogRecord("vllm.platforms", logging.WARNING, __file__, 1, message, args, None)
        return HarmlessVLLMMessages().filter(record)

    # vLLM's CPU worker sets VLLM_DIST_IDENT itself; a variable the user set is still reported.
    assert not shown("Unknown vLLM environment variable detected: %s", "VLLM_DIST_IDENT")
    assert shown("Unknown vLLM environment variable detected: %s", "VLLM_DIST_IDENTITY")
    assert shown("Unknown vLLM environment variable detected: %s", "VLLM_USE_SOMETHING")
    assert not shown("This model does not officially support disabling chunked prefill. Disabling this manually "
                     "may cause the engine to crash or produce incorrect outputs.")
    assert not shown("OMP_NUM_THREADS=2 is set; leaving Torch threads at 2 for serving. Multi-threaded torch CPU ops "
                     "during serving can degrade performance through spin-wait contention and cgroup CPU-quota "
                     "throttling.")
    assert shown("Engine core initialization failed.")
