"""Shared checkpoints and reference outputs for the rollout tests.

vLLM start-up dominates these tests, so engines are shared: one engine per model kind
receives the weight syncs, and one fresh engine per kind, started on the exported
updated weights, gives the reference outputs (cached for the whole session).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

pytest.importorskip("vllm", reason="rollout tests need vllm (extra rollout-cpu)")
pytest.importorskip("transformers", reason="rollout tests need transformers (extra policy)")

# Tests run the engine in this process; the own-process test starts its own interpreter.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

from r1core.testing.random_models import perturb_, save_random_model  # noqa: E402

KINDS = ("qwen2", "qwen2_tied", "qwen3_moe")
#: The first prompt spans two KV blocks (16 tokens each) so that the prefix cache holds
#: blocks computed with the old weights when a sync happens.
PROMPTS = [list(range(3, 43)), [7, 9, 11, 13, 15], list(range(100, 120))]
MAX_TOKENS = 12
MAX_MODEL_LEN = 128
UPDATE_SEED = 1


@dataclass
class Checkpoints:
    """A random model saved as-is (the engine's start) and after a perturbation."""

    initial_dir: str
    updated_dir: str
    updated_model: torch.nn.Module


def greedy(engine, prompts=PROMPTS):
    """(token ids, log-probs) of greedy samples, one per prompt."""
    samples = engine.generate(prompts, n=1, max_tokens=MAX_TOKENS, temperature=0.0)
    return [(s[0].token_ids, s[0].logprobs) for s in samples]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    cache: dict[str, Checkpoints] = {}

    def get(kind: str) -> Checkpoints:
        if kind not in cache:
            root = tmp_path_factory.mktemp(kind)
            model = save_random_model(root / "initial", kind, seed=0)
            perturb_(model, seed=UPDATE_SEED)
            model.save_pretrained(root / "updated")
            cache[kind] = Checkpoints(str(root / "initial"), str(root / "updated"), model)
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def fresh_reference(checkpoints):
    """Greedy outputs of a fresh engine started on the updated weights, per kind.

    Call it while no other in-process engine is alive: closing an in-process engine
    tears down vLLM's process-wide parallel state (and a dense model's state lacks the
    expert-parallel group a MoE engine needs), so each reference engine is started and
    closed on its own.
    """
    from r1core.rollout import VLLMRollout

    cache: dict[str, list] = {}

    def get(kind: str):
        if kind not in cache:
            with VLLMRollout(checkpoints(kind).updated_dir, max_model_len=MAX_MODEL_LEN,
                             dtype="float32") as engine:
                cache[kind] = greedy(engine)
        return cache[kind]

    return get
