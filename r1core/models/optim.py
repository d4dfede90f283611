"""Optimiser settings of the policy (``Policy.train_step``) and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class OptimConfig:
    """Optimiser settings of :meth:`Policy.train_step`.

    lr, weight_decay, betas, eps: AdamW's.
    clip_grad: global gradient-norm clip (0 disables).
    distributed_optimizer: shard optimiser state over data-parallel ranks (CUDA engine).
    lr_schedule: ``constant``, ``linear`` or ``cosine`` decay from ``lr`` to
        ``lr * min_lr_ratio`` over ``total_steps`` optimiser steps (after the warmup).
    warmup_steps: optimiser steps of linear warmup from ``lr / warmup_steps`` to ``lr``.
    total_steps: optimiser steps the schedule spans, warmup included (decays need it > 0).
    min_lr_ratio: the decay's floor as a fraction of ``lr``.
    master_weights: keep fp32 copies of low-precision (bf16/fp16) parameters: gradients
        accumulate in fp32 over micro-batches, and the optimiser state and update are fp32
        (the CPU engine; Megatron's optimiser does the same on CUDA). None: on exactly when
        the parameters are not fp32.
    """

    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float = 1.0
    distributed_optimizer: bool = True
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    total_steps: int = 0
    min_lr_ratio: float = 0.0
    master_weights: bool | None = None

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0 or self.total_steps < 0:
            raise ValueError(f"warmup_steps and total_steps must be >= 0, got {self.warmup_steps}, {self.total_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.lr_schedule != "constant" and self.total_steps <= self.warmup_steps:
            raise ValueError(f"a {self.lr_schedule} decay needs total_steps ({self.total_steps}) > warmup_steps "
                             f"({self.warmup_steps})")

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based).

        Warmup: ``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, so
        the first update is already non-zero. Then ``constant``, or a ``linear`` / ``cosine``
        decay reaching ``lr * min_lr_ratio`` at step ``total_steps - 1`` and staying there.
        """
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        span = max(self.total_steps - 1 - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        floor = self.lr * self.min_lr_ratio
        if self.lr_schedule == "linear":
            return floor + (self.lr - floor) * (1.0 - progress)
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
