"""Vocabulary embeddings and LM heads written in place during a weight update.

The vocabulary matrices are the model's largest tensors (Qwen2.5-0.5B: 519 MiB of its
1885 MiB in fp32) and travel in many pieces. vLLM's layerwise reload would need the
whole tensor at once, twice over: the reassembled tensor handed to the loader, and the
layer it materialises to load it into before copying it back. Neither is needed for an
unquantised vocabulary-parallel embedding: its live ("kernel") weight has the
checkpoint's layout, rows ``[org_vocab_start, org_vocab_end)`` of this worker's shard
followed by zero padding. So each piece is copied straight into the live weight, and
when the last one is in, the layer's post-load processing is re-run (on CPU it re-packs
the GEMM copy an LM head uses), as vLLM's reload would. The receiver's extra memory for
these tensors is then nothing beyond the bucket and that processing.

Only layers that fit this exactly are handled here (checked at the start of each
update); anything else goes through vLLM's loaders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1core._extras import require

require("vllm", extra="rollout-cpu", feature="r1core.rollout")

from vllm.model_executor.layers.vocab_parallel_embedding import (  # noqa: E402
    UnquantizedEmbeddingMethod,
    VocabParallelEmbedding,
)
from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO  # noqa: E402


@dataclass
class _Target:
    """One in-place vocabulary weight of this worker."""

    module: VocabParallelEmbedding
    param_name: str
    """vLLM's parameter name (what ``load_weights`` would report as loaded)."""
    org_start: int
    org_end: int
    received: int = 0
    weight: torch.Tensor | None = None


class InPlaceEmbeddings:
    """The vocabulary weights of a vLLM model that pieces may be written into in place.

    Build it before ``initialize_layerwise_reload`` (the model must still hold its live
    tensors); ``put`` pieces during the update; ``close`` at its end.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self._mapper = getattr(model, "hf_to_vllm_mapper", None)
        self._targets: dict[str, _Target] = {}
        seen: set[int] = set()
        for path, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if not isinstance(module, VocabParallelEmbedding) or not isinstance(
                weight, torch.Tensor
            ):
                continue
            if id(weight) in seen:
                continue  # a tied LM head: its weight is the embedding's, sent once
            seen.add(id(weight))
            indices = module.shard_indices
            eligible = (
                isinstance(module.quant_method, UnquantizedEmbeddingMethod)
                and weight.ndim == 2
                and weight.is_contiguous()
                and getattr(weight, "output_dim", None) == 0
                and getattr(weight, "packed_dim", None) is None
                and indices.added_vocab_end_index == indices.added_vocab_start_index
            )
            if eligible:
                name = f"{path}.weight" if path else "weight"
                self._targets[name] = _Target(module, name, indices.org_vocab_start_index,
                                              indices.org_vocab_end_index)
        self._open: dict[str, _Target] = {}
        self.loaded_names: set[str] = set()

    def target_name(self, hf_name: str) -> str | None:
        """vLLM's name of the in-place weight ``hf_name`` maps to, or None."""
        name = self._mapper.map_name(hf_name) if self._mapper is not None else hf_name
        return name if name in self._targets else None

    def put(self, name: str, piece: torch.Tensor, start: int, shape: list[int]) -> None:
        """Write flattened elements ``[start, start + piece.numel())`` of the full
        ``[vocab, hidden]`` tensor into this worker's rows of the live weight."""
        target = self._targets[name]
        if target.weight is None:
            info = LAYERWISE_INFO.get(target.module)
            if info is None or info.kernel_tensors is None:
                raise RuntimeError(f"{name}: in-place write outside a layerwise reload")
            target.weight = info.kernel_tensors[0]["weight"]
            self._open[name] = target
        weight = target.weight
        vocab, hidden = (int(d) for d in shape)
        if hidden != weight.shape[1] or target.org_end > vocab:
            raise ValueError(
                f"{name}: sent shape {shape} does not fit the engine's {list(weight.shape)} "
                f"(vocabulary rows {target.org_start}..{target.org_end})"
            )
        # This worker's rows, as a window of the flattened full tensor.
        low, high = target.org_start * hidden, target.org_end * hidden
        begin, end = max(start, low), min(start + piece.numel(), high)
        if end > begin:
            weight.view(-1)[begin - low : end - low].copy_(piece[begin - start : end - start])
        target.received += piece.numel()
        if target.received >= vocab * hidden:
            self._complete(target)

    def _complete(self, target: _Target) -> None:
        from vllm.model_executor.model_loader.reload.layerwise import _place_kernel_tensors

        module, weight = target.module, target.weight
        assert weight is not None
        weight[target.org_end - target.org_start :].zero_()  # padding rows, as the loader does
        info = LAYERWISE_INFO[module]
        # Put the live tensors back in place of the reload's meta placeholders, then run
        # the post-load processing the reload would have run, and end the layer's reload
        # so that vLLM's finalisation leaves it alone.
        _place_kernel_tensors(module, info)
        rebuild_post_load(module)
        info.reset()
        self.loaded_names.add(target.param_name)
        self._open.pop(target.param_name, None)
        target.received, target.weight = 0, None

    def close(self) -> list[str]:
        """End the update; returns the names whose pieces did not all arrive (their live
        weights are left half old, half new and must be reported)."""
        incomplete = sorted(self._open)
        for target in self._open.values():
            target.received, target.weight = 0, None
        self._open = {}
        return incomplete


def rebuild_post_load(module: torch.nn.Module) -> None:
    """Re-run ``module``'s post-load processing, dropping its stale products first.

    On CPU that processing builds a packed GEMM copy of the weight (``cpu_linear`` holds
    it); building the new one while the old one is alive would cost a second copy of a
    vocabulary matrix at the peak. No forward runs during a weight update, so the old
    copy is released first.
    """
    if "cpu_linear" in vars(module):
        del module.cpu_linear
    module.quant_method.process_weights_after_loading(module)
