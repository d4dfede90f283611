"""Megatron-Core's rotary embeddings with the family settings Megatron takes only in part, and
usable without CUDA.

* :class:`PolicyRotaryEmbedding` is Megatron's ``RotaryEmbedding``. Its Llama 3.1+ frequency
  scaling (``_apply_scaling``) takes all four of the checkpoint's values (Megatron's
  ``GPTModel`` passes only the factor and keeps Llama 3.1's 1 / 4 / 8192 for the others, which
  Llama 3.2 and scaled-down configs do not share). ``linear`` scaling is Megatron's
  ``seq_len_interpolation_factor``. Without CUDA the table is computed where ``inv_freq``
  lives (the stock ``get_emb`` moves it to the current CUDA device first).
* :class:`HostYarnRotaryEmbedding` is Megatron's ``YarnRotaryEmbedding`` (DeepSeek-V3's MLA)
  with the table computed on the host, from Megatron's own YaRN helpers.
"""

from __future__ import annotations

from typing import Any

import torch

from r1core._extras import require

require("megatron.core", extra="policy", feature="r1core.models")

from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding  # noqa: E402
from megatron.core.models.common.embeddings.yarn_rotary_pos_embedding import (  # noqa: E402
    YarnRotaryEmbedding,
    _yarn_find_correction_range,
    _yarn_get_concentration_factor,
    _yarn_linear_ramp_mask,
)

from r1core.models.shape import Rope  # noqa: E402


class PolicyRotaryEmbedding(RotaryEmbedding):
    """``RotaryEmbedding`` for a :class:`~r1core.models.shape.Rope` (see the module doc)."""

    def __init__(self, rope: Rope, kv_channels: int, *, rotary_interleaved: bool = False,
                 cp_group: Any = None) -> None:
        # _apply_scaling runs inside the parent constructor: the values must be set first.
        object.__setattr__(self, "_rope", rope)
        super().__init__(
            kv_channels=kv_channels,
            rotary_percent=rope.fraction,
            rotary_interleaved=rotary_interleaved,
            seq_len_interpolation_factor=rope.factor if rope.kind == "linear" else None,
            rotary_base=rope.theta,
            rope_scaling=rope.kind == "llama3",
            rope_scaling_factor=rope.factor,
            use_cpu_initialization=not torch.cuda.is_available(),
            cp_group=cp_group,
        )

    def _apply_scaling(self, freqs: torch.Tensor, factor: float = 8.0, **unused: Any) -> torch.Tensor:
        rope = self._rope
        return super()._apply_scaling(
            freqs,
            factor=rope.factor,
            low_freq_factor=rope.low_freq_factor,
            high_freq_factor=rope.high_freq_factor,
            original_max_position_embeddings=rope.original_max_position_embeddings or 8192,
        )

    def get_emb(self, max_seq_len: int, offset: int = 0) -> torch.Tensor:
        if torch.cuda.is_available():
            return super().get_emb(max_seq_len, offset)
        freqs = self.get_freqs_non_repeated(max_seq_len, offset)
        if not self.rotary_interleaved:
            emb = torch.cat((freqs, freqs), dim=-1)
        else:
            emb = torch.stack((freqs.view(-1, 1), freqs.view(-1, 1)), dim=-1).view(freqs.shape[0], -1)
        return emb[:, None, None, :]


class HostYarnRotaryEmbedding(YarnRotaryEmbedding):
    """``YarnRotaryEmbedding`` whose table is computed on the device its frequencies live on."""

    def get_emb(self, max_seq_len: int, offset: int = 0) -> tuple[torch.Tensor, float]:
        if torch.cuda.is_available():
            return super().get_emb(max_seq_len, offset)
        low, high = _yarn_find_correction_range(
            self.beta_fast, self.beta_slow, self.dim, self.rotary_base,
            self.original_max_position_embeddings, self.correction_range_round_to_int,
        )
        extrapolate = 1.0 - _yarn_linear_ramp_mask(low, high, self.dim // 2, device=self.inv_freq_extra.device)
        extrapolate = extrapolate.to(torch.float32)
        inv_freq = self.inv_freq_inter * (1 - extrapolate) + self.inv_freq_extra * extrapolate
        positions = torch.arange(max_seq_len, device=inv_freq.device, dtype=inv_freq.dtype) + offset
        freqs = torch.outer(positions, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, None, :]
        return emb, _yarn_get_concentration_factor(self.scaling_factor, self.mscale, self.mscale_all_dim)


def host_rotary_for_latent_attention(config: Any, cp_group: Any) -> RotaryEmbedding:
    """The rotary embedding ``MLASelfAttention`` builds for ``config``, computed on the host."""
    if config.rope_type == "yarn":
        return HostYarnRotaryEmbedding(
            config.qk_pos_emb_head_dim,
            rotary_base=config.rotary_base,
            scaling_factor=config.rotary_scaling_factor,
            original_max_position_embeddings=config.original_max_position_embeddings,
            beta_fast=config.beta_fast,
            beta_slow=config.beta_slow,
            mscale=config.mscale,
            mscale_all_dim=config.mscale_all_dim,
            use_cpu_initialization=True,
            cp_group=cp_group,
        )
    return PolicyRotaryEmbedding(Rope(theta=config.rotary_base, fraction=config.rotary_percent),
                                 config.qk_pos_emb_head_dim, cp_group=cp_group)
