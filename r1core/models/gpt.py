"""Megatron-Core ``GPTModel`` whose last stage returns per-token log-probabilities.

:class:`PolicyGPTModel` replaces the output layer's logits with
``r1core.ops.fused_logprobs`` on the final hidden states: the vocabulary-parallel weight slice
of each tensor-parallel rank is scored in chunks inside the op, so the ``[tokens, vocab]``
logits never exist in memory. Everything before the output layer (embedding, decoder, final
norm, pipeline hand-off) is Megatron's, except the rotary table
(:class:`~r1core.models.rotary.PolicyRotaryEmbedding`) and Gemma's embedding scale.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from r1core._extras import require

require("megatron.core", extra="policy", feature="r1core.models")

from megatron.core.models.gpt.gpt_model import GPTModel  # noqa: E402

from r1core.models.rotary import PolicyRotaryEmbedding  # noqa: E402
from r1core.models.shape import Rope  # noqa: E402
from r1core.ops import fused_logprobs  # noqa: E402


class _GatherSequenceParallel(torch.autograd.Function):
    """All-gather ``[s/tp, ...]`` -> ``[s, ...]`` over the tensor-parallel group.

    The backward takes this rank's slice of the incoming gradient without a reduction: the
    log-prob op already all-reduces the hidden-state gradient inside its own backward, so every
    rank receives the full gradient (a reduce-scatter here would count it tp times).
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        world = dist.get_world_size(group)
        ctx.rank = dist.get_rank(group)
        ctx.local_len = local.shape[0]
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        start = ctx.rank * ctx.local_len
        return grad[start : start + ctx.local_len].contiguous(), None


def gather_sequence_parallel(local: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """See :class:`_GatherSequenceParallel`."""
    return _GatherSequenceParallel.apply(local, group)


class PolicyGPTModel(GPTModel):
    """``GPTModel`` with a log-prob head.

    Extra constructor arguments: ``true_vocab_size`` (rows of the padded output weight at or
    beyond it are padding and are never scored), ``rope`` (the model's rotary settings) and
    ``embedding_scale`` (input embeddings are multiplied by it; Gemma: sqrt(hidden)).

    ``forward(..., labels=[b, s], temperature=T, return_entropy=bool)`` on the last pipeline
    stage returns ``(logp [b, s] fp32, entropy [b, s] fp32 or None)`` of
    ``softmax(logits / T)``; other stages return hidden states as ``GPTModel`` does.
    ``labels[:, t]`` is the token whose probability is read at position t.
    """

    def __init__(self, *args: Any, true_vocab_size: int, rope: Rope | None = None,
                 embedding_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.true_vocab_size = true_vocab_size
        self.embedding_scale = embedding_scale
        if rope is not None and getattr(self, "rotary_pos_emb", None) is not None:
            self.rotary_pos_emb = PolicyRotaryEmbedding(
                rope, self.config.kv_channels, rotary_interleaved=self.config.rotary_interleaved,
                cp_group=self.pg_collection.cp,
            )

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: Any = None, *,
                labels: torch.Tensor | None = None, temperature: float = 1.0, return_entropy: bool = False,
                **kwargs: Any) -> Any:
        if self.pre_process and self.embedding_scale != 1.0:
            embedded = self.embedding(input_ids=input_ids, position_ids=position_ids)
            # The scale is rounded to the activation dtype first, as Gemma's reference does.
            kwargs["decoder_input"] = embedded * torch.tensor(self.embedding_scale, dtype=embedded.dtype)
        hidden = super().forward(input_ids, position_ids, attention_mask, labels=labels, **kwargs)
        if not self.post_process:
            return hidden
        if labels is None:
            raise ValueError("PolicyGPTModel scores tokens only: pass labels=[b, s]")
        return self.score(hidden, labels, temperature=temperature, return_entropy=return_entropy)

    def setup_embeddings_and_output_layer(self) -> None:
        """Megatron's set-up, minus its start-up copy of the tied embedding to the last pipeline
        stage when there is no CUDA (that copy moves the weight to the GPU first). The copy is
        not needed here: both stages load the embedding from the checkpoint."""
        if torch.cuda.is_available():
            return super().setup_embeddings_and_output_layer()
        embedding_group = getattr(self, "embd_group", None)
        self.embd_group = None  # "not in the embedding group": skips only the start-up all-reduce
        try:
            super().setup_embeddings_and_output_layer()
        finally:
            self.embd_group = embedding_group

    def output_weight(self) -> torch.Tensor:
        """This rank's ``[V_local, H]`` slice of the output weight (tied or not)."""
        if self.share_embeddings_and_output_weights:
            return self.shared_embedding_or_output_weight()
        return self.output_layer.weight

    def _postprocess(self, hidden_states, *args, **kwargs):
        """The decoder's (final-normed) hidden states: :meth:`score` reads them."""
        if self.config.mtp_num_layers:
            raise ValueError(
                "multi-token prediction is dropped for RL: the policy trains the main model only "
                "(DeepSeek-V3's MTP layers are ignored at import and absent from the export)"
            )
        return hidden_states

    def score(self, hidden_states: torch.Tensor, labels: torch.Tensor, *, temperature: float,
              return_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log-probs (and entropies) of ``labels [b, s]`` from ``hidden_states [s(/tp), b, h]``."""
        tp_group = self.pg_collection.tp
        tp_size = dist.get_world_size(tp_group) if tp_group is not None else 1
        if self.config.sequence_parallel and tp_size > 1:
            hidden_states = gather_sequence_parallel(hidden_states, tp_group)
        seq, batch, hidden = hidden_states.shape
        # [s, b, h] -> [b*s, h] so the result comes out batch-major like the labels.
        flat_hidden = hidden_states.transpose(0, 1).reshape(batch * seq, hidden)
        flat_labels = labels.reshape(batch * seq)
        weight = self.output_weight()
        rows = weight.shape[0]
        tp_rank = dist.get_rank(tp_group) if tp_size > 1 else 0
        vocab_start = tp_rank * rows
        valid = max(0, min(rows, self.true_vocab_size - vocab_start))
        if valid < rows:  # padded vocabulary rows (at the end of the last ranks' slices)
            weight = weight[:valid]
        # The op's own label check assumes equal slices; the last ranks' slices are cut at the
        # true vocabulary here, and Policy.make_batch has already checked every id against it.
        result = fused_logprobs(
            flat_hidden,
            weight,
            flat_labels,
            temperature=temperature,
            return_entropy=return_entropy,
            tp_group=tp_group if tp_size > 1 else None,
            vocab_start=vocab_start,
            validate=False,
        )
        if isinstance(result, tuple):
            logp, entropy = result
            return logp.view(batch, seq), entropy.view(batch, seq)
        return result.view(batch, seq), None
