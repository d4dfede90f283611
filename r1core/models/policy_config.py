"""The run's ``policy`` section and the optimiser settings it turns into.

Importable without megatron-core, so a configuration is checked before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1core.models.optim import OptimConfig


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

    def optim(self, lr: float | None = None) -> OptimConfig:
        """The optimiser settings of this policy, at learning rate ``lr`` (default ``self.lr``;
        the cold start and ``r1core sft`` train at ``sft.lr``)."""
        return OptimConfig(lr=self.lr if lr is None else lr, weight_decay=self.weight_decay, clip_grad=self.clip_grad)
