"""Trainer-side bucketing and staging: bounded buckets, exact bytes, checkpoint names."""

from __future__ import annotations

import pytest
import torch

from r1core.rollout.bridge import (
    BUFFER_ALIGNMENT,
    BucketWriter,
    ModuleWeightSource,
    SharedMemoryBuffer,
    WeightSource,
    dtype_from_name,
    view_in_buffer,
)


def _tensors():
    generator = torch.Generator().manual_seed(0)
    shapes = [(97, 33), (5,), (64, 64), (1, 3, 7), (200,), (31, 17)]
    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.float32, torch.int64,
              torch.float32]
    return [(f"t{i}", torch.randn(shape, generator=generator).to(dtype))
            for i, (shape, dtype) in enumerate(zip(shapes, dtypes))]


def _receive(path: str, bucket) -> list[tuple[str, torch.Tensor]]:
    """What a worker sees: its own mapping of the file, views by record."""
    buffer = torch.from_file(path, shared=True, size=bucket.buffer_bytes, dtype=torch.uint8)
    info = bucket.to_update_info()
    return [
        (name, view_in_buffer(buffer, offset, dtype_from_name(dtype), shape).clone())
        for name, dtype, shape, offset in zip(info["names"], info["dtype_names"],
                                              info["shapes"], info["offsets"])
    ]


@pytest.mark.parametrize("bucket_bytes", [64, 4096, 20_000, 1 << 20])
def test_buckets_round_trip_and_stay_bounded(bucket_bytes):
    tensors = _tensors()
    buffer = SharedMemoryBuffer(bucket_bytes)
    received, bucket_sizes = [], []

    def ship(bucket):
        records = bucket.records
        end = records[-1].offset + tensors_by_name[records[-1].name].numel() * \
            tensors_by_name[records[-1].name].element_size()
        bucket_sizes.append((len(records), end))
        assert all(r.offset % BUFFER_ALIGNMENT == 0 for r in records)
        received.extend(_receive(buffer.path, bucket))

    tensors_by_name = dict(tensors)
    writer = BucketWriter(buffer, bucket_bytes, ship)
    for name, tensor in tensors:
        writer.add(name, tensor)
    writer.flush()
    largest = max(t.numel() * t.element_size() for _, t in tensors)
    assert [n for n, _ in received] == [n for n, _ in tensors]
    for (_, sent), (_, got) in zip(tensors, received):
        assert got.dtype == sent.dtype and torch.equal(got, sent)
    for count, end in bucket_sizes:
        # A bucket overflows its bound only when it holds a single oversized tensor.
        assert end <= bucket_bytes or count == 1
    assert buffer.num_bytes <= max(bucket_bytes, largest) + BUFFER_ALIGNMENT
    assert writer.num_buckets == len(bucket_sizes)
    assert writer.num_tensors == len(tensors)
    buffer.close()


def test_buffer_file_is_removed_on_close():
    import os

    buffer = SharedMemoryBuffer(1024)
    assert os.path.exists(buffer.path)
    buffer.close()
    assert not os.path.exists(buffer.path)


def test_view_in_buffer_rejects_overrun():
    buffer = torch.zeros(128, dtype=torch.uint8)
    with pytest.raises(ValueError, match="overruns"):
        view_in_buffer(buffer, 64, torch.float32, [17])


def test_unknown_dtype_name_is_named():
    with pytest.raises(ValueError, match="complex32"):
        dtype_from_name("complex32")


def test_module_source_yields_checkpoint_names(tmp_path):
    """The adapter yields exactly the names and values ``save_pretrained`` writes."""
    safetensors = pytest.importorskip("safetensors.torch")
    from r1core.rollout.random_models import save_random_model

    for kind in ("qwen2_tied", "qwen3_moe"):
        model = save_random_model(tmp_path / kind, kind)
        source = ModuleWeightSource(model)
        assert isinstance(source, WeightSource)
        sent = dict(source.iter_hf_weights())
        saved = safetensors.load_file(str(tmp_path / kind / "model.safetensors"))
        assert sorted(sent) == sorted(saved)
        for name, tensor in saved.items():
            assert torch.equal(sent[name], tensor), name
