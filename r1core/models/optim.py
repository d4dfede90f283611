"""Optimiser settings of the policy (``Policy.train_step``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OptimConfig:
    """Optimiser settings of :meth:`Policy.train_step`.

    lr, weight_decay, betas, eps: AdamW's.
    clip_grad: global gradient-norm clip (0 disables).
    distributed_optimizer: shard optimiser state over data-parallel ranks (CUDA engine).
    """

    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float = 1.0
    distributed_optimizer: bool = True
