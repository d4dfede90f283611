"""Hugging Face <-> Megatron-Core weight layouts, one parameter at a time.

Each Megatron parameter of this rank maps to one or more Hugging Face tensors through a
:class:`ParamMap`, read from the family's table in :mod:`r1core.models.checkpoint_names`:

* ``qkv``: Megatron's fused ``linear_qkv`` is grouped per query group -- for each key/value
  head g: the ``heads/groups`` query heads of g, then k_g, then v_g (weights and biases). Tensor
  parallelism splits whole groups, so the merged tensor is split contiguously along dim 0.
  ``qkv_fused`` is the same from one ``[q; k; v]`` tensor (Phi-3).
* ``glu``: ``linear_fc1`` is ``[gate; up]`` *per rank*: rank r holds
  ``cat(gate_r, up_r)``, not a contiguous slice of ``cat(gate, up)``. ``glu_fused`` is the
  same from one ``[gate; up]`` tensor.
* ``column`` / ``row``: split along dim 0 / 1 (``vocab`` is ``column`` with the vocabulary
  padded with zero rows to the padded size; padded rows are never scored).
* ``replicated``: norms, router, expert bias, MLA down-projections.

Experts live on the expert-parallel rank ``global_expert // num_local_experts`` and are split
by the expert-tensor-parallel group. Layers are numbered globally (pipeline offset applied).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from r1core.models.checkpoint_names import NameTable, table_for
from r1core.models.shape import ModelShape


@dataclass
class ShardContext:
    """Where this rank sits. ``tp``/``etp``/``ep`` groups may be None (size 1)."""

    shape: ModelShape
    padded_vocab: int
    layer_offset: int
    tp_rank: int = 0
    tp_size: int = 1
    ep_rank: int = 0
    ep_size: int = 1
    etp_rank: int = 0
    etp_size: int = 1
    tp_group: dist.ProcessGroup | None = None
    ep_group: dist.ProcessGroup | None = None
    etp_group: dist.ProcessGroup | None = None

    @property
    def num_local_experts(self) -> int:
        return self.shape.num_experts // self.ep_size

    @property
    def names(self) -> NameTable:
        return table_for(self.shape.model_type)


@dataclass
class ParamMap:
    """How one Megatron parameter relates to Hugging Face tensors.

    hf_names: the Hugging Face tensors, in the order the ``kind`` expects
        (qkv: q, k, v; glu: gate, up).
    kind: see the module docstring.
    expert: True if the parameter is an expert's (split by the expert-tensor group instead of
        the tensor group).
    expert_slot: local expert index (experts only): the HF names given are those of the
        expert this rank holds; :func:`hf_names_for_ep_rank` gives the other ranks'.
    templates: the table's HF names with ``{e}`` (experts only).
    """

    hf_names: list[str]
    kind: str
    expert: bool = False
    expert_slot: int = -1
    templates: tuple[str, ...] = ()


_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


def _match_layer_entry(rest: str, names: NameTable) -> tuple[tuple[str, ...], str, int | None]:
    """The table entry of layer-local Megatron name ``rest``; the local expert slot or None."""
    entry = names.layer.get(rest)
    if entry is not None:
        return entry[0], entry[1], None
    for key, (hf, kind) in names.layer.items():
        if "{e}" not in key:
            continue
        pattern = "^" + re.escape(key).replace(r"\{e\}", r"(\d+)") + "$"
        found = re.match(pattern, rest)
        if found:
            return hf, kind, int(found.group(1))
    raise KeyError(rest)


def param_map(name: str, ctx: ShardContext) -> ParamMap:
    """The :class:`ParamMap` of Megatron parameter (or persistent buffer) ``name`` on this rank."""
    names = ctx.names
    if name == "embedding.word_embeddings.weight":
        return ParamMap([names.embedding], "vocab")
    if name == "output_layer.weight":
        return ParamMap([names.embedding if ctx.shape.tied_embeddings else names.output], "vocab")
    if name == "decoder.final_layernorm.weight":
        return ParamMap([names.final_norm], "replicated")
    match = _LAYER.match(name)
    if match is None:
        raise KeyError(f"no Hugging Face mapping for Megatron parameter {name!r}")
    layer = int(match.group(1)) + ctx.layer_offset
    prefix = names.layer_prefix.format(layer=layer)
    try:
        templates, kind, slot = _match_layer_entry(match.group(2), names)
    except KeyError:
        raise KeyError(
            f"no Hugging Face mapping for Megatron parameter {name!r} in the "
            f"{ctx.shape.model_type!r} table"
        ) from None
    if slot is None:
        return ParamMap([prefix + t for t in templates], kind)
    global_expert = ctx.ep_rank * ctx.num_local_experts + slot
    return ParamMap([prefix + t.format(e=global_expert) for t in templates], kind, expert=True,
                    expert_slot=slot, templates=tuple(prefix + t for t in templates))


def hf_names_for_ep_rank(mapping: ParamMap, ctx: ShardContext, ep_rank: int) -> list[str]:
    """The HF names of ``mapping``'s expert slot on expert-parallel rank ``ep_rank``."""
    global_expert = ep_rank * ctx.num_local_experts + mapping.expert_slot
    return [t.format(e=global_expert) for t in mapping.templates]


# ----------------------------------------------------------------------------- HF -> Megatron


def _split_rank(mapping: ParamMap, ctx: ShardContext) -> tuple[int, int]:
    return (ctx.etp_rank, ctx.etp_size) if mapping.expert else (ctx.tp_rank, ctx.tp_size)


def merge_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: ModelShape) -> torch.Tensor:
    """HF q ``[heads*d, ...]``, k/v ``[groups*d, ...]`` -> Megatron ``[groups*(heads/groups+2)*d, ...]``."""
    groups, d = shape.num_kv_heads, shape.kv_channels
    tail = q.shape[1:]
    q = q.reshape(groups, -1, *tail)
    k = k.reshape(groups, d, *tail)
    v = v.reshape(groups, d, *tail)
    return torch.cat([q, k, v], dim=1).reshape(-1, *tail)


def split_qkv(fused: torch.Tensor, shape: ModelShape) -> list[torch.Tensor]:
    """Inverse of :func:`merge_qkv` (on the full, gathered tensor)."""
    groups, d = shape.num_kv_heads, shape.kv_channels
    per_group = shape.num_attention_heads // groups
    tail = fused.shape[1:]
    grouped = fused.reshape(groups, (per_group + 2) * d, *tail)
    q, k, v = grouped.split([per_group * d, d, d], dim=1)
    return [x.reshape(-1, *tail).contiguous() for x in (q, k, v)]


def _split_fused_qkv(fused: torch.Tensor, shape: ModelShape) -> list[torch.Tensor]:
    """``[q; k; v]`` stacked along dim 0 (Phi-3's ``qkv_proj``) -> q, k, v."""
    query = shape.num_attention_heads * shape.kv_channels
    key_value = shape.num_kv_heads * shape.kv_channels
    return list(fused.split([query, key_value, key_value], dim=0))


def to_local(mapping: ParamMap, hf: list[torch.Tensor], ctx: ShardContext) -> torch.Tensor:
    """This rank's shard of the Megatron parameter, from the full HF tensors."""
    rank, size = _split_rank(mapping, ctx)
    kind = mapping.kind
    if kind == "replicated":
        return hf[0]
    if kind == "glu_fused":
        kind, hf = "glu", list(hf[0].chunk(2, dim=0))
    if kind == "qkv_fused":
        kind, hf = "qkv", _split_fused_qkv(hf[0], ctx.shape)
    if kind == "glu":
        gate, up = (t.chunk(size, dim=0)[rank] for t in hf)
        return torch.cat([gate, up], dim=0)
    if kind == "qkv":
        return merge_qkv(*hf, shape=ctx.shape).chunk(size, dim=0)[rank]
    if kind == "vocab":
        full = hf[0]
        pad = ctx.padded_vocab - full.shape[0]
        if pad:
            full = torch.cat([full, full.new_zeros(pad, *full.shape[1:])], dim=0)
        return full.chunk(size, dim=0)[rank]
    if kind == "column":
        return hf[0].chunk(size, dim=0)[rank]
    if kind == "row":
        return hf[0].chunk(size, dim=1)[rank]
    raise ValueError(f"unknown layout kind {kind!r}")


# ----------------------------------------------------------------------------- Megatron -> HF


def from_gathered(mapping: ParamMap, shards: list[torch.Tensor], ctx: ShardContext) -> list[torch.Tensor]:
    """Full HF tensors (in ``mapping.hf_names`` order) from every split rank's shard."""
    kind = mapping.kind
    if kind == "replicated":
        return [shards[0]]
    if kind in ("glu", "glu_fused"):
        halves = [s.chunk(2, dim=0) for s in shards]
        gate_up = [torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves])]
        return gate_up if kind == "glu" else [torch.cat(gate_up)]
    if kind in ("qkv", "qkv_fused"):
        q_k_v = split_qkv(torch.cat(shards, dim=0), ctx.shape)
        return q_k_v if kind == "qkv" else [torch.cat(q_k_v)]
    if kind == "vocab":
        return [torch.cat(shards, dim=0)[: ctx.shape.vocab_size]]
    if kind == "column":
        return [torch.cat(shards, dim=0)]
    if kind == "row":
        return [torch.cat(shards, dim=1)]
    raise ValueError(f"unknown layout kind {kind!r}")


def _all_gather(tensor: torch.Tensor, group: dist.ProcessGroup | None, size: int) -> list[torch.Tensor]:
    if size == 1 or group is None:
        return [tensor]
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return parts


def gather_param(
    name: str, param: torch.Tensor, ctx: ShardContext
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hf_name, full tensor)`` for one Megatron parameter, gathering only its own
    tensor-parallel (and, for experts, expert-parallel) shards. Collective: every rank of those
    groups must call it for the same parameter."""
    mapping = param_map(name, ctx)
    tensor = param.detach()
    if mapping.kind != "replicated":
        group, size = (ctx.etp_group, ctx.etp_size) if mapping.expert else (ctx.tp_group, ctx.tp_size)
        shards = _all_gather(tensor, group, size)
    else:
        shards = [tensor]
    if not mapping.expert or ctx.ep_size == 1:
        yield from zip(mapping.hf_names, from_gathered(mapping, shards, ctx))
        return
    # Each expert-parallel rank holds another expert in this slot: gather the (already
    # expert-tensor-gathered) shards across the expert group, one slot at a time.
    per_rank = [_all_gather(s, ctx.ep_group, ctx.ep_size) for s in shards]
    for ep_rank in range(ctx.ep_size):
        full = from_gathered(mapping, [p[ep_rank] for p in per_rank], ctx)
        yield from zip(hf_names_for_ep_rank(mapping, ctx, ep_rank), full)


# ----------------------------------------------------------------------------- files


class SafetensorsReader:
    """Lazy reader over a Hugging Face checkpoint folder (one file or sharded with an index)."""

    def __init__(self, hf_dir: str | Path) -> None:
        from safetensors import safe_open

        self.dir = Path(hf_dir)
        index = self.dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (self.dir / "model.safetensors").is_file():
            files, weight_map = ["model.safetensors"], None
        else:
            raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {hf_dir}")
        self._handles = {f: safe_open(str(self.dir / f), framework="pt") for f in files}
        if weight_map is None:
            weight_map = {k: "model.safetensors" for k in self._handles["model.safetensors"].keys()}
        self.weight_map: dict[str, str] = weight_map

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def get(self, name: str) -> torch.Tensor:
        if name not in self.weight_map:
            raise KeyError(f"tensor {name!r} is not in the checkpoint at {self.dir}")
        return self._handles[self.weight_map[name]].get_tensor(name)

    def dtype(self) -> torch.dtype:
        first = next(iter(self.weight_map))
        return self.get(first).dtype


#: Buffers that are checkpoint tensors (DeepSeek-V3's routing correction bias).
_CHECKPOINT_BUFFERS = ("mlp.router.expert_bias",)


def named_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter of ``model`` and the buffers that are checkpoint tensors, in order."""
    yield from model.named_parameters()
    for name, buffer in model.named_buffers():
        if buffer is not None and name.endswith(_CHECKPOINT_BUFFERS):
            yield name, buffer


def load_into(model: torch.nn.Module, reader: SafetensorsReader, ctx: ShardContext) -> set[str]:
    """Copy every parameter of ``model`` (this rank's shard) from the checkpoint. Returns the HF
    names that were read; raises if a parameter has no source or a shape does not fit."""
    used: set[str] = set()
    with torch.no_grad():
        for name, param in named_weights(model):
            mapping = param_map(name, ctx)
            hf = [reader.get(n) for n in mapping.hf_names]
            used.update(mapping.hf_names)
            local = to_local(mapping, hf, ctx)
            if tuple(local.shape) != tuple(param.shape):
                raise ValueError(
                    f"{name}: checkpoint gives shape {tuple(local.shape)} for this rank, "
                    f"the model expects {tuple(param.shape)} (from {mapping.hf_names})"
                )
            param.copy_(local.to(param.dtype))
            mark_partitioned(param, mapping)
    return used


def mark_partitioned(param: torch.Tensor, mapping: ParamMap) -> None:
    """Set Megatron's ``tensor_model_parallel``/``partition_dim`` attributes. Megatron sets them
    only inside its weight initialisers, which are skipped (``perform_initialization=False``)
    because the checkpoint supplies the values; gradient-norm and optimiser code read them to
    count each shard once."""
    if mapping.kind == "replicated" or not isinstance(param, torch.nn.Parameter):
        return
    param.tensor_model_parallel = True
    param.partition_dim = 1 if mapping.kind == "row" else 0
    param.partition_stride = 1


def check_coverage(reader_keys: list[str], used: set[str], ignore: Callable[[str], bool]) -> None:
    """Raise if checkpoint tensors were left unread (single-rank layouts only)."""
    left = sorted(k for k in reader_keys if k not in used and not ignore(k))
    if left:
        raise ValueError(f"checkpoint tensors not used by the model: {left[:8]}{' ...' if len(left) > 8 else ''}")
