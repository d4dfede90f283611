"""Megatron-Core policy built from Hugging Face checkpoints.

Public surface::

    from r1core.models import build_policy, ParallelConfig
    policy = build_policy("ckpt/", ParallelConfig(tensor=2), dtype=torch.bfloat16)
    logp = policy.logprobs(input_ids)                 # [B, T-1] fp32
    metrics = policy.train_step(micro_batches, loss_fn)
    for name, tensor in policy.iter_hf_weights(): ... # weight sync to the rollout engine
    policy.export_hf("out/")

``ParallelConfig`` (from :mod:`r1core.parallel`) and the config parsing import without megatron-core; everything else needs
the ``policy`` extra (``pip install 'r1core[policy]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from r1core.models.config import ModelSpec, UnsupportedModelError, model_spec_from_hf, supported_model_types
from r1core.parallel.layout import LayoutError, ParallelConfig

if TYPE_CHECKING:
    from r1core.models.policy import Policy, build_policy
    from r1core.models.train import OptimConfig

_LAZY = {
    "Policy": "r1core.models.policy",
    "build_policy": "r1core.models.policy",
    "OptimConfig": "r1core.models.train",
    "RoutingReplay": "r1core.models.routing_replay",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        from r1core._extras import require

        require("megatron.core", extra="policy", feature="r1core.models")
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'r1core.models' has no attribute {name!r}")


__all__ = [
    "ModelSpec",
    "OptimConfig",
    "ParallelConfig",
    "LayoutError",
    "Policy",
    "RoutingReplay",
    "UnsupportedModelError",
    "build_policy",
    "model_spec_from_hf",
    "supported_model_types",
]
