"""Rollouts with vLLM and the trainer-to-engine weight bridge.

Importable without vLLM: ``VLLMRollout`` and the backends load vLLM on first use and
raise ``MissingExtraError`` naming the extra to install when it is absent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from r1core.rollout.bridge import ModuleWeightSource, WeightSource
from r1core.rollout.config import RolloutConfig
from r1core.rollout.policy_sync import sync_policy_weights
from r1core.rollout.weight_update import SyncStats, WeightUpdate

if TYPE_CHECKING:
    from r1core.rollout.vllm_rollout import RolloutSample, VLLMRollout

__all__ = [
    "ModuleWeightSource",
    "RolloutConfig",
    "RolloutSample",
    "SyncStats",
    "VLLMRollout",
    "WeightSource",
    "WeightUpdate",
    "sync_policy_weights",
]

_LAZY = {"VLLMRollout", "RolloutSample"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from r1core.rollout import vllm_rollout

        return getattr(vllm_rollout, name)
    raise AttributeError(f"module 'r1core.rollout' has no attribute {name!r}")
