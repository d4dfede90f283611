"""The Megatron-Core policy: build from a Hugging Face checkpoint, score tokens, train, export.

``build_policy(hf_dir, parallel)`` reads ``config.json``, builds :class:`PolicyGPTModel` (this
rank's pipeline stage and tensor/expert shards) through the spec in ``r1core.models.spec``, and
loads the safetensors weights shard by shard. See :class:`Policy` for what it offers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from r1core._extras import require
from r1core.batch import MicroBatch

require("megatron.core", extra="policy", feature="r1core.models")

from megatron.core import parallel_state  # noqa: E402
from megatron.core.packed_seq_params import PackedSeqParams  # noqa: E402
from megatron.core.transformer.transformer_layer import get_transformer_layer_offset  # noqa: E402

from r1core.models import export as hf_export  # noqa: E402
from r1core.models.config import transformer_config  # noqa: E402
from r1core.models.gpt import PolicyGPTModel  # noqa: E402
from r1core.models.hf_config import load_hf_config, parse_hf_config  # noqa: E402
from r1core.models.optim import OptimConfig  # noqa: E402
from r1core.models.routing_replay import RoutingReplay, pack_sample_routes  # noqa: E402
from r1core.models.shape import ModelShape  # noqa: E402
from r1core.models.spec import decoder_block_spec, select_backend, transformer_engine_available  # noqa: E402
from r1core.models.train import Trainer  # noqa: E402
from r1core.models.weights import (  # noqa: E402
    SafetensorsReader,
    ShardContext,
    check_coverage,
    gather_param,
    load_into,
    named_weights,
)
from r1core.parallel.groups import init_distributed, world_size_and_rank  # noqa: E402
from r1core.parallel.layout import LayoutError, ParallelConfig, check_model_fits, padded_vocab_size, resolve_layout  # noqa: E402

#: ``loss_fn(logp [B, W], entropy [B, W] | None, micro_batch) -> (loss, metrics)``: the loss of
#: one micro-batch from its sequence-aligned log-probs; metrics are scalar tensors.
LossFn = Callable[[torch.Tensor, "torch.Tensor | None", MicroBatch], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class Batch:
    """Model inputs for one forward. ``labels[b, s]`` is the token scored at position s.

    For packed input ``input_ids`` is ``[1, total]`` and ``lengths`` gives each sequence's
    length in pack order; ``packed`` carries Megatron's ``thd`` parameters.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor | None
    packed: PackedSeqParams | None
    batch_size: int
    max_len: int


class Policy:
    """A causal LM held as Megatron-Core modules on this rank.

    Attributes: ``shape`` (:class:`ModelShape`), ``parallel`` (:class:`ParallelConfig`),
    ``model`` (this rank's :class:`PolicyGPTModel`), ``hf_config`` (the source config dict),
    ``routing`` (:class:`RoutingReplay` of the MoE layers; empty for dense models).
    """

    def __init__(
        self,
        model: PolicyGPTModel,
        shape: ModelShape,
        parallel: ParallelConfig,
        ctx: ShardContext,
        hf_config: dict[str, Any],
        source_dir: Path,
        source_dtype: torch.dtype,
        optim: OptimConfig,
    ) -> None:
        self.model = model
        self.shape = shape
        self.parallel = parallel
        self.ctx = ctx
        self.hf_config = hf_config
        self.source_dir = source_dir
        self.source_dtype = source_dtype
        self.routing = RoutingReplay(model)
        self.trainer = Trainer(self, optim)
        self.device = next(model.parameters()).device

    # ------------------------------------------------------------------ inputs

    def make_batch(
        self,
        input_ids: torch.Tensor | Sequence[torch.Tensor],
        lengths: torch.Tensor | Sequence[int] | None = None,
    ) -> Batch:
        """Turn ``[B, T]`` ids (optionally with ``lengths [B]``) or a list of 1-D id tensors into
        model inputs. With lengths or a list, sequences are packed end to end (``thd``: no
        padding is computed on); otherwise the ``[B, T]`` block is run as is."""
        self._check_ids(input_ids)
        if isinstance(input_ids, torch.Tensor) and lengths is None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
            ids = input_ids.to(self.device, torch.long)
            batch, seq = ids.shape
            if self.parallel.sequence_parallel and seq % self.parallel.tensor:
                return self.make_batch(ids, torch.full((batch,), seq))
            labels = torch.zeros_like(ids)
            labels[:, :-1] = ids[:, 1:]
            positions = torch.arange(seq, device=self.device).expand(batch, seq)
            return Batch(ids, positions, labels, None, None, batch, seq)
        if isinstance(input_ids, torch.Tensor):
            lengths_t = torch.as_tensor(lengths, dtype=torch.long).cpu()
            if lengths_t.shape != (input_ids.shape[0],):
                raise ValueError(f"lengths must be [B]={input_ids.shape[0]}, got {tuple(lengths_t.shape)}")
            if (lengths_t < 1).any() or (lengths_t > input_ids.shape[1]).any():
                raise ValueError(f"lengths must lie in [1, {input_ids.shape[1]}], got {lengths_t.tolist()}")
            seqs = [input_ids[i, : int(n)] for i, n in enumerate(lengths_t)]
        else:
            seqs = [torch.as_tensor(s) for s in input_ids]
            if not seqs or any(s.dim() != 1 or s.numel() == 0 for s in seqs):
                raise ValueError("a list input must hold non-empty 1-D id tensors")
            lengths_t = torch.tensor([s.numel() for s in seqs], dtype=torch.long)
        ids = torch.cat([s.to(self.device, torch.long) for s in seqs])
        labels = torch.zeros_like(ids)
        labels[:-1] = ids[1:]  # the last label of each sequence is never read
        positions = torch.cat([torch.arange(int(n), device=self.device) for n in lengths_t])
        seg_lengths = lengths_t.tolist()
        # Sequence parallelism splits the packed token axis evenly over the tensor group:
        # pad with one dummy sequence (its own segment, so it attends to nothing real).
        multiple = self.parallel.tensor if self.parallel.sequence_parallel else 1
        pad = (-ids.numel()) % multiple
        if pad:
            ids = torch.cat([ids, ids.new_zeros(pad)])
            labels = torch.cat([labels, labels.new_zeros(pad)])
            positions = torch.cat([positions, torch.arange(pad, device=self.device)])
            seg_lengths.append(pad)
        cu = torch.zeros(len(seg_lengths) + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(torch.tensor(seg_lengths), 0)
        cu = cu.to(self.device)
        packed = PackedSeqParams(
            qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
            max_seqlen_q=max(seg_lengths), max_seqlen_kv=max(seg_lengths),
        )
        return Batch(ids[None], positions[None], labels[None], lengths_t, packed,
                     len(lengths_t), int(lengths_t.max()))

    def _check_ids(self, input_ids: torch.Tensor | Sequence[torch.Tensor]) -> None:
        # One host read of min/max (a synchronisation if the ids are already on the GPU).
        for ids in [input_ids] if isinstance(input_ids, torch.Tensor) else input_ids:
            ids = torch.as_tensor(ids)
            if ids.is_floating_point():
                raise ValueError(f"input_ids must be integer token ids, got {ids.dtype}")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.shape.vocab_size):
                raise ValueError(
                    f"token ids must lie in [0, {self.shape.vocab_size}), got "
                    f"[{int(ids.min())}, {int(ids.max())}]"
                )

    def unpack(self, flat: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Model output ``[1, total]`` (packed) or ``[B, T]`` -> ``[B, T-1]`` next-token values;
        entries at or past ``lengths - 1`` are 0."""
        if batch.packed is None:
            return flat[:, :-1]
        out = flat.new_zeros(batch.batch_size, batch.max_len - 1)
        start = 0
        for i, n in enumerate(batch.lengths.tolist()):
            out[i, : n - 1] = flat[0, start : start + n - 1]
            start += n
        return out

    # ------------------------------------------------------------------ forward

    def forward(self, batch: Batch, *, temperature: float = 1.0, return_entropy: bool = False,
                model: torch.nn.Module | None = None) -> Any:
        """One differentiable forward of this stage. Last stage: ``(logp, entropy)`` in model
        layout (``[B, T]`` or ``[1, total]``) of ``softmax(logits / temperature)``; other stages:
        hidden states."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        module = model if model is not None else self.model
        return module(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            attention_mask=None,
            labels=batch.labels,
            packed_seq_params=batch.packed,
            temperature=float(temperature),
            return_entropy=return_entropy,
        )

    @torch.no_grad()
    def logprobs(
        self,
        input_ids: torch.Tensor | Sequence[torch.Tensor],
        *,
        lengths: torch.Tensor | Sequence[int] | None = None,
        temperature: float = 1.0,
        return_entropy: bool = False,
        routes: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``log p(x[t+1] | x[:t+1]) / temperature-scaled``, float32 ``[B, T-1]`` (and the
        entropy of that distribution, ``[B, T-1]``, with ``return_entropy``).

        ``input_ids``: ``LongTensor [B, T]``, or a list of 1-D tensors (packed without padding;
        the result is padded with 0 to the longest). ``lengths [B]``: valid prefix of each row
        (packed the same way). ``routes``: per sample, the MoE experts to replay (rollout routing
        replay; the format of ``RolloutSample.routes``). Under pipeline parallelism the result
        is computed on the last stage and broadcast to every rank of the pipeline group.
        """
        if routes is not None and isinstance(input_ids, torch.Tensor) and lengths is None:
            lengths = [input_ids.shape[1]] * input_ids.shape[0]  # replay needs the packed layout
        was_training = self.model.training
        self.model.eval()
        try:
            batch = self.make_batch(input_ids, lengths)
            with self.replay_samples(routes, batch):
                out = self.trainer.forward_only(batch, temperature=temperature, return_entropy=return_entropy)
        finally:
            self.model.train(was_training)
        logp, entropy = out
        logp = self.unpack(logp, batch)
        if return_entropy:
            return logp, self.unpack(entropy, batch)
        return logp

    # ------------------------------------------------------------------ training

    def train_step(self, micro_batches: Sequence[MicroBatch], loss_fn: LossFn, *,
                   temperature: float = 1.0, return_entropy: bool = False) -> dict[str, torch.Tensor]:
        """One optimiser step over ``micro_batches`` (gradient accumulation).

        Each :class:`~r1core.batch.MicroBatch`'s sequences are packed and run forward (replaying
        its per-sample ``routes`` in the MoE layers when given, packed like the sequences); ``loss_fn(logp, entropy, micro_batch)``
        returns ``(loss, metrics)`` and the step minimises the mean of the micro-batch losses
        (the loss scales of :mod:`r1core.trainer.loss_scale` make that the loss of the whole
        batch). Returns ``loss``, ``grad_norm`` (before clipping), ``lr`` and the mean of each
        metric, all as tensors (no host sync inside the step).
        """
        return self.trainer.train_step(micro_batches, loss_fn, temperature=temperature,
                                       return_entropy=return_entropy)

    def state_dict(self) -> dict[str, Any]:
        """This rank's model shard and optimiser state, for checkpoints (tensors on CPU)."""
        # A snapshot: the optimiser's state dict holds references to tensors the next step
        # updates in place, so copy them out.
        snapshot = lambda t: t.detach().cpu().clone() if isinstance(t, torch.Tensor) else t  # noqa: E731
        model = {k: snapshot(v) for k, v in self.model.state_dict().items() if v is not None}
        optimizer = torch.utils._pytree.tree_map(snapshot, self.trainer.optimizer().state_dict())
        return {"model": model, "optimizer": optimizer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (same layout and rank)."""
        self.model.load_state_dict(state["model"])
        self.trainer.optimizer().load_state_dict(state["optimizer"])

    # ------------------------------------------------------------------ MoE routing

    def record_routing(self) -> contextlib.AbstractContextManager[list[list[torch.Tensor]]]:
        """Record the experts chosen in the forwards run inside the block (see
        :class:`RoutingReplay`)."""
        return self.routing.record()

    def replay_routing(self, routes: Sequence[Any]) -> contextlib.AbstractContextManager[None]:
        """Force the experts given per MoE layer of this stage (``int64 [N, k]`` in router token
        order; ``-1`` rows route freely)."""
        return self.routing.replay(routes)

    def moe_layer_indices(self) -> list[int]:
        """For each MoE layer of this stage, its index among the model's MoE layers (the
        second axis of per-sample routes)."""
        pattern = self.shape.moe_layer_pattern
        offset = self.ctx.layer_offset
        return [sum(pattern[: offset + local]) for local in self.routing.layer_indices]

    def replay_samples(self, routes: Sequence[torch.Tensor] | None,
                       batch: Batch) -> contextlib.AbstractContextManager[None]:
        """Replay per-sample ``routes`` (see ``RolloutSample.routes``: integer
        ``[positions, num_moe_layers, top_k]`` each, ``-1`` for free positions) in the forward
        of the packed ``batch``; a no-op for ``None`` or a dense model."""
        if routes is None or not self.routing.num_layers:
            return contextlib.nullcontext()
        if batch.packed is None:
            raise ValueError("routing replay needs packed sequences (a list input or lengths)")
        lengths = batch.lengths.tolist()
        total = batch.input_ids.shape[1]
        if len(routes) != len(lengths):
            raise ValueError(f"routing replay: {len(routes)} routes for {len(lengths)} sequences")
        per_layer = pack_sample_routes(routes, lengths, self.moe_layer_indices(), top_k=self.shape.moe_top_k,
                                       total_tokens=total)
        if self.parallel.sequence_parallel and self.parallel.tensor > 1:
            # Each tensor-parallel rank routes its own contiguous slice of the packed tokens.
            rank = parallel_state.get_tensor_model_parallel_rank()
            per_layer = [r.chunk(self.parallel.tensor)[rank] for r in per_layer]
        return self.routing.replay([r.to(self.device) for r in per_layer])

    # ------------------------------------------------------------------ weights out

    def iter_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(hugging_face_name, full tensor)`` one parameter at a time.

        Collective over the tensor- and expert-parallel groups: only the shards of the current
        parameter are gathered (never the whole model). Every rank of those groups gets and
        yields the same full tensors, so all of them must consume the iterator to the end.
        Under pipeline parallelism each stage yields the parameters it holds (the tied
        embedding once, on the first stage). Tensors keep the model's dtype and device.
        """
        tied = self.shape.tied_embeddings
        for name, param in named_weights(self.model):
            if tied and name == "output_layer.weight":
                continue  # the last stage's copy of the tied embedding
            yield from gather_param(name, param, self.ctx)

    def export_hf(self, out_dir: str | Path, *, dtype: torch.dtype | None = None,
                  max_shard_bytes: int = 2 << 30) -> Path:
        """Write a Hugging Face checkpoint (``config.json``, safetensors shards and index) that
        transformers and vLLM load. ``dtype`` defaults to the source checkpoint's. Collective:
        call on every rank; one rank per pipeline stage writes its layers."""
        return hf_export.export(self.iter_hf_weights(), Path(out_dir), hf_config=self.hf_config,
                                source_dir=self.source_dir, dtype=dtype or self.source_dtype,
                                max_shard_bytes=max_shard_bytes, keep_dtype=("e_score_correction_bias",))


def build_policy(
    hf_dir: str | Path,
    parallel: ParallelConfig | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    optim: OptimConfig | None = None,
    seed: int = 1234,
    use_transformer_engine: bool | None = None,
    recompute: bool = False,
    grouped_gemm: bool | None = None,
    transformer_overrides: dict[str, Any] | None = None,
) -> Policy:
    """Build the policy from a Hugging Face checkpoint folder.

    hf_dir: folder with ``config.json`` and ``model.safetensors`` (or shards with an index).
    parallel: layout (default: one process). Checked against the world size and the model
        before anything is built (:class:`r1core.parallel.LayoutError`).
    dtype: parameter dtype (``torch.bfloat16`` on GPU, ``torch.float32`` on CPU).
    optim: optimiser settings used by :meth:`Policy.train_step`.
    use_transformer_engine: None picks TE when it is installed and CUDA is present.
    grouped_gemm: MoE experts as one grouped GEMM (Megatron's ``TEGroupedMLP`` or
        ``GroupedMLP``, CUDA only); None: on where CUDA and one of them is available, else
        Megatron's per-expert ``SequentialMLP`` (see ``r1core.models.config.grouped_gemm_default``).
    """
    parallel = parallel if parallel is not None else ParallelConfig()
    hf_dir = Path(hf_dir)
    hf_config = load_hf_config(hf_dir)
    shape = parse_hf_config(hf_config, name=hf_dir.name)
    check_policy_supports(parallel, shape)
    world_size, _ = world_size_and_rank()
    check_model_fits(resolve_layout(parallel, world_size), shape)
    reader = SafetensorsReader(hf_dir)
    init_distributed(parallel, seed=seed)

    config = transformer_config(shape, parallel, dtype=dtype, recompute=recompute, grouped_gemm=grouped_gemm,
                                extra=transformer_overrides)
    backend = select_backend(use_transformer_engine, zero_centered_norms=shape.zero_centered_norms)
    pre = parallel_state.is_pipeline_first_stage()
    post = parallel_state.is_pipeline_last_stage()
    padded = padded_vocab_size(shape.vocab_size, parallel.tensor)
    layer_ropes = None
    if shape.local_rope is not None:
        layer_ropes = [shape.local_rope if shape.is_window_layer(i) else None for i in range(shape.num_layers)]
    model = PolicyGPTModel(
        config=config,
        transformer_layer_spec=decoder_block_spec(config, backend, layer_ropes=layer_ropes,
                                                  sandwich_norms=shape.sandwich_norms),
        vocab_size=padded,
        true_vocab_size=shape.vocab_size,
        rope=shape.rope,
        embedding_scale=shape.embedding_scale,
        max_sequence_length=shape.max_position_embeddings,
        pre_process=pre,
        post_process=post,
        share_embeddings_and_output_weights=shape.tied_embeddings,
        position_embedding_type="rope",
        rotary_base=int(shape.rope.theta),
        rotary_percent=shape.rope.fraction,
    )
    if torch.cuda.is_available():
        model = model.cuda()
    ctx = shard_context(shape, padded, config)
    used = load_into(model, reader, ctx)
    if parallel.tensor * parallel.pipeline * parallel.expert == 1:
        # Single-shard layout: every checkpoint tensor must have been used (the tied lm_head
        # some files carry is a copy of the embedding; DeepSeek's multi-token-prediction layers,
        # numbered from num_layers on, are dropped).
        extra_layers = tuple(f"model.layers.{i}." for i in range(shape.num_layers, shape.num_layers + 8))
        check_coverage(reader.keys(), used, ignore=lambda k: (shape.tied_embeddings and k == "lm_head.weight")
                       or k.startswith(extra_layers))
    return Policy(model, shape, parallel, ctx, hf_config, hf_dir, reader.dtype(), optim or OptimConfig())


def check_policy_supports(parallel: ParallelConfig, shape: ModelShape | None = None) -> None:
    """Raise :class:`LayoutError` for the layouts Megatron-Core allows but this policy does not
    build: context parallelism, the interleaved pipeline schedule, sequence parallelism
    without CUDA (its linear layers allocate their communication buffers on the GPU), fewer KV
    heads than tensor-parallel ranks (the weight loader shards KV heads, it does not replicate
    them), and latent attention split over tensor-parallel ranks without Transformer Engine
    (Megatron's local spec splits its down-projections, which must be replicated)."""
    problems = []
    if shape is not None and shape.latent_attention is None and shape.num_kv_heads % parallel.tensor:
        problems.append(f"num_kv_heads={shape.num_kv_heads} is not divisible by tensor={parallel.tensor} "
                        "(the policy shards KV heads over the tensor-parallel ranks)")
    if shape is not None and shape.latent_attention is not None and parallel.tensor > 1 \
            and not transformer_engine_available():
        problems.append(f"multi-head latent attention with tensor={parallel.tensor} needs Transformer Engine "
                        "(its replicated TELinear down-projections)")
    if parallel.context not in (0, 1):
        problems.append(f"the policy does not support context={parallel.context} (context parallelism)")
    if parallel.virtual_pipeline not in (None, 0, 1):
        problems.append(f"the policy does not support virtual_pipeline={parallel.virtual_pipeline} "
                        "(the interleaved pipeline schedule)")
    if shape is not None and shape.latent_attention is not None and not torch.cuda.is_available():
        problems.append("multi-head latent attention (DeepSeek-V3) needs CUDA: Megatron-Core 0.16's "
                        "MLASelfAttention builds its rotary table on torch.cuda.current_device() in its "
                        "constructor, which no spec slot replaces")
    if parallel.sequence_parallel and not torch.cuda.is_available():
        problems.append("sequence_parallel needs CUDA: Megatron's sequence-parallel linear layers "
                        "allocate their communication buffers on the GPU")
    if problems:
        raise LayoutError(problems)


def shard_context(shape: ModelShape, padded_vocab: int, config: Any) -> ShardContext:
    """This rank's :class:`ShardContext` from Megatron's initialised groups."""
    ps = parallel_state
    tp_size = ps.get_tensor_model_parallel_world_size()
    ep_size = ps.get_expert_model_parallel_world_size()
    etp_size = ps.get_expert_tensor_parallel_world_size()
    return ShardContext(
        shape=shape,
        padded_vocab=padded_vocab,
        layer_offset=get_transformer_layer_offset(config),
        tp_rank=ps.get_tensor_model_parallel_rank(),
        tp_size=tp_size,
        ep_rank=ps.get_expert_model_parallel_rank(),
        ep_size=ep_size,
        etp_rank=ps.get_expert_tensor_parallel_rank(),
        etp_size=etp_size,
        tp_group=ps.get_tensor_model_parallel_group() if tp_size > 1 else None,
        ep_group=ps.get_expert_model_parallel_group() if ep_size > 1 else None,
        etp_group=ps.get_expert_tensor_parallel_group() if etp_size > 1 else None,
    )


__all__ = ["Batch", "LossFn", "Policy", "build_policy", "check_policy_supports"]
