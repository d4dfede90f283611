"""Megatron-Core policy built from Hugging Face checkpoints.

Public surface::

    from r1core.models import build_policy, ParallelConfig
    policy = build_policy("ckpt/", ParallelConfig(tensor=2), dtype=torch.bfloat16)
    logp = policy.logprobs(input_ids)                 # [B, T-1] fp32
    metrics = policy.train_step(micro_batches, loss_fn)
    for name, tensor in policy.iter_hf_weights(): ... # weight sync to the rollout engine
    policy.export_hf("out/")

``ParallelConfig`` (from :mod:`r1core.parallel`), the model-shape record and the config parsing
(:mod:`r1core.models.shape`, :mod:`r1core.models.hf_config`) import without megatron-core;
everything else needs the ``policy`` extra (``pip install 'r1core[policy]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from r1core.models.hf_config import from_hf_config, load_hf_config, parse_hf_config, supported_model_types
from r1core.models.optim import OptimConfig
from r1core.models.shape import ModelShape, UnsupportedModelError
from r1core.parallel.layout import LayoutError, ParallelConfig

if TYPE_CHECKING:
    from r1core.models.policy import Policy, build_policy

_LAZY = {
    "Policy": "r1core.models.policy",
    "build_policy": "r1core.models.policy",
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
    "ModelShape",
    "OptimConfig",
    "ParallelConfig",
    "LayoutError",
    "Policy",
    "RoutingReplay",
    "UnsupportedModelError",
    "build_policy",
    "from_hf_config",
    "load_hf_config",
    "parse_hf_config",
    "supported_model_types",
]
