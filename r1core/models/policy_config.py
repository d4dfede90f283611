"""The run's ``policy`` section and the optimiser settings it turns into.

Importable without megatron-core, so a configuration is checked before anything is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from r1core.models.optim import LR_SCHEDULES, OptimConfig


@dataclass
class PolicyConfig:
    """The model being trained."""

    hf_dir: str = ""
    """Hugging Face checkpoint to start from; empty builds the embedded default model."""
    dtype: str = "auto"
    """Parameter dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float32``, ``bfloat16``."""
    lr: float = 2e-4
    """RL learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    clip_grad: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    lr_schedule: str = "constant"
    """Learning-rate decay after the warmup: ``constant``, ``linear`` or ``cosine`` (to
    ``lr * min_lr_ratio`` at the last optimiser step of the phase, RL or SFT)."""
    warmup_steps: int = 0
    """Optimiser steps of linear learning-rate warmup (each phase: RL and SFT)."""
    min_lr_ratio: float = 0.0
    """Floor of a decaying schedule, as a fraction of the learning rate."""
    recompute: bool = False
    """Activation recomputation: keep only each layer's input through the forward and run
    the layer again in the backward (Megatron-Core's full, uniform recompute)."""
    export_every: int = 0
    """``r1core train``: also write a Hugging Face checkpoint to ``<run dir>/hf/step_N``
    every this many RL steps (0: only ``final``)."""

    def torch_dtype(self) -> torch.dtype:
        """The parameter dtype as a ``torch.dtype`` (``auto``: bfloat16 on CUDA, float32 on CPU)."""
        if self.dtype == "auto":
            return torch.bfloat16 if torch.cuda.is_available() else torch.float32
        return getattr(torch, self.dtype)

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"policy.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if not self.lr > 0:
            raise ValueError(f"policy.lr must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ValueError(f"policy.weight_decay must be >= 0, got {self.weight_decay}")
        if not self.clip_grad >= 0:
            raise ValueError(f"policy.clip_grad must be >= 0 (0 disables clipping), got {self.clip_grad}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"policy.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"policy.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"policy.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.export_every < 0:
            raise ValueError(f"policy.export_every must be >= 0, got {self.export_every}")

    def validate(self) -> None:
        """``hf_dir``, when given, is a folder whose ``config.json`` reads as a model the policy
        builds (checked before any weight is read).

        Raises:
            ValueError: naming ``policy.hf_dir`` and what is wrong with it.
        """
        if not self.hf_dir:
            return
        from r1core.models.hf_config import from_hf_config

        folder = Path(self.hf_dir)
        if not folder.is_dir():
            raise ValueError(f"policy.hf_dir={self.hf_dir!r} is not a folder (a Hugging Face checkpoint: "
                             "config.json, weights, tokenizer)")
        try:
            from_hf_config(folder)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"policy.hf_dir={self.hf_dir!r}: unreadable config.json ({error})") from None
        except ValueError as error:  # UnsupportedModelError, a missing size
            raise ValueError(f"policy.hf_dir={self.hf_dir!r}: {error}") from None
        except KeyError as error:
            raise ValueError(f"policy.hf_dir={self.hf_dir!r}: config.json lacks {error}") from None

    def optim(self, lr: float | None = None, total_steps: int = 0) -> OptimConfig:
        """The optimiser settings of this policy, at learning rate ``lr`` (default ``self.lr``;
        the cold start and ``r1core sft`` train at ``sft.lr``), with the schedule spanning
        ``total_steps`` optimiser steps (a decay with fewer steps than the warmup stays
        constant after it)."""
        schedule = self.lr_schedule if total_steps > self.warmup_steps else "constant"
        return OptimConfig(lr=self.lr if lr is None else lr, weight_decay=self.weight_decay, clip_grad=self.clip_grad,
                           lr_schedule=schedule, warmup_steps=self.warmup_steps, total_steps=total_steps,
                           min_lr_ratio=self.min_lr_ratio)
