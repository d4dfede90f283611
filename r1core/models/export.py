"""Write a model as a Hugging Face checkpoint (config, safetensors shards, index).

Parameters stream in one at a time (``Policy.iter_hf_weights``); on each pipeline stage one
rank (tensor rank 0, data rank 0) writes them into size-bounded shard files, so no rank ever
holds more than one shard's worth of weights. The index lists every stage's tensors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist

from megatron.core import parallel_state as ps

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}

#: Files that travel with an exported checkpoint.
SIDE_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja")


def copy_side_files(src: Path, dst: Path) -> None:
    """Copy the tokenizer and generation files of ``src`` into ``dst``."""
    for name in SIDE_FILES:
        if (src / name).is_file() and src.resolve() != dst.resolve():
            shutil.copy2(src / name, dst / name)


def export(weights: Iterable[tuple[str, torch.Tensor]], out_dir: Path, *, hf_config: dict[str, Any],
           source_dir: Path, dtype: torch.dtype, max_shard_bytes: int,
           keep_dtype: tuple[str, ...] = ()) -> Path:
    """Write ``weights`` (``(hf_name, full tensor)``, collective as ``Policy.iter_hf_weights``)
    under ``out_dir`` with ``hf_config`` and ``source_dir``'s side files. Tensors are cast to
    ``dtype`` except those whose name ends with one of ``keep_dtype``. Returns ``out_dir``.
    Collective: every rank calls it."""
    from safetensors.torch import save_file

    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"export dtype must be one of {list(_DTYPE_NAMES)}, got {dtype}")
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = ps.get_pipeline_model_parallel_rank()
    writer = ps.get_tensor_model_parallel_rank() == 0 and ps.get_data_parallel_rank() == 0
    shard: dict[str, torch.Tensor] = {}
    shard_bytes, files, weight_map, total_bytes = 0, 0, {}, 0

    def flush() -> None:
        nonlocal shard, shard_bytes, files
        if shard:
            name = f"model-stage{stage:03d}-{files:05d}.safetensors"
            save_file(shard, str(out_dir / name), metadata={"format": "pt"})
            weight_map.update({key: name for key in shard})
            files += 1
        shard, shard_bytes = {}, 0

    for name, tensor in weights:
        if not writer:
            continue
        tensor = tensor.to("cpu", tensor.dtype if name.endswith(keep_dtype) else dtype).contiguous()
        if shard and shard_bytes + tensor.numel() * tensor.element_size() > max_shard_bytes:
            flush()
        shard[name] = tensor
        shard_bytes += tensor.numel() * tensor.element_size()
        total_bytes += tensor.numel() * tensor.element_size()
    if writer:
        flush()

    # Every stage's writer contributes its part of the index; global rank 0 writes it.
    parts = [(weight_map, total_bytes)]
    if dist.is_initialized() and dist.get_world_size() > 1:
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (weight_map, total_bytes))
    if not dist.is_initialized() or dist.get_rank() == 0:
        merged: dict[str, str] = {}
        for part_map, _ in parts:
            merged.update(part_map)
        size = sum(part_bytes for _, part_bytes in parts)
        index = {"metadata": {"total_size": size}, "weight_map": dict(sorted(merged.items()))}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        config = dict(hf_config)
        config["dtype"] = _DTYPE_NAMES[dtype]
        config.pop("torch_dtype", None)
        (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        copy_side_files(source_dir, out_dir)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
    return out_dir
