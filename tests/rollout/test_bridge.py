"""Trainer-side bucketing and staging: bounded buckets, exact bytes, checkpoint names."""

from __future__ import annotations

import pytest
import torch

from r1core.rollout.bridge import (
    BUFFER_ALIGNMENT,
    BucketWriter,
    ModuleWeightSource,
    STAGING_PREFIX,
    SharedMemoryBuffer,
    WeightSource,
    dtype_from_name,
    remove_stale_buffers,
    view_in_buffer,
)


def _tensors():
    generator = torch.Generator().manual_seed(0)
    shapes = [(97, 33), (5,), (64, 64), (1, 3, 7), (200,), (31, 17), (0, 4), ()]
    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.float32, torch.int64,
              torch.float32, torch.float32, torch.float64]
    tensors = [(f"t{i}", torch.randn(shape, generator=generator).to(dtype))
               for i, (shape, dtype) in enumerate(zip(shapes, dtypes))]
    # A strided (transposed) tensor: pieces are copied row block by row block.
    tensors.append(("strided", torch.randn(40, 70, generator=generator).t()))
    return tensors


class _Receiver:
    """What a worker does with a bucket: its own mapping of the file, whole tensors
    cloned, pieces of split tensors reassembled in order of their element ranges."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.received: list[tuple[str, torch.Tensor]] = []
        self.pending: dict[str, tuple[torch.Tensor, int]] = {}

    def __call__(self, bucket) -> None:
        buffer = torch.from_file(self.path, shared=True, size=bucket.buffer_bytes,
                                 dtype=torch.uint8)
        info = bucket.to_update_info()
        for name, dtype, shape, offset, start, numel in zip(
            info["names"], info["dtype_names"], info["shapes"], info["offsets"],
            info["starts"], info["numels"],
        ):
            dtype = dtype_from_name(dtype)
            piece = view_in_buffer(buffer, offset, dtype, [numel]).clone()
            full, filled = self.pending.pop(name, (torch.empty(shape, dtype=dtype), 0))
            assert start == filled, f"{name}: pieces out of order"
            full.view(-1)[start : start + numel] = piece
            if start + numel == full.numel():
                self.received.append((name, full))
            else:
                self.pending[name] = (full, start + numel)


@pytest.mark.parametrize("bucket_bytes", [64, 100, 4096, 20_000, 1 << 20])
def test_buckets_round_trip_and_stay_bounded(bucket_bytes):
    """Every tensor arrives bitwise equal; no bucket and no staging byte exceeds the
    bound, even for tensors much larger than the bucket (they travel in pieces)."""
    tensors = _tensors()
    buffer = SharedMemoryBuffer(bucket_bytes)
    receiver = _Receiver(buffer.path)
    ends = []

    def ship(bucket):
        for record in bucket.records:
            assert record.offset % BUFFER_ALIGNMENT == 0
            element = torch.empty((), dtype=dtype_from_name(record.dtype)).element_size()
            ends.append(record.offset + record.numel * element)
        assert bucket.buffer_bytes <= bucket_bytes
        receiver(bucket)

    writer = BucketWriter(buffer, bucket_bytes, ship)
    for name, tensor in tensors:
        writer.add(name, tensor)
    writer.flush()
    assert buffer.num_bytes == bucket_bytes  # the staging buffer is the bucket, exactly
    assert max(ends) <= bucket_bytes
    assert [n for n, _ in receiver.received] == [n for n, _ in tensors]
    assert not receiver.pending
    for (_, sent), (_, got) in zip(tensors, receiver.received):
        assert got.dtype == sent.dtype and got.shape == sent.shape and torch.equal(got, sent)
    largest = max(t.numel() * t.element_size() for _, t in tensors)
    if largest > bucket_bytes:
        assert writer.num_pieces > writer.num_tensors
    assert writer.num_tensors == len(tensors)
    assert writer.num_bytes == sum(t.numel() * t.element_size() for _, t in tensors)
    buffer.close()


def test_whole_tensors_are_not_split_when_an_empty_bucket_holds_them():
    """A tensor that fits in a bucket starts a new one instead of being split."""
    buffer = SharedMemoryBuffer(4096)
    shipped = []
    writer = BucketWriter(buffer, 4096, lambda bucket: shipped.append(bucket.records))
    writer.add("a", torch.zeros(700))  # 2800 bytes
    writer.add("b", torch.ones(700))   # does not fit beside "a", fits alone
    writer.add("c", torch.ones(2000))  # 8000 bytes: split in pieces
    writer.flush()
    pieces = [(r.name, r.start, r.numel) for records in shipped for r in records]
    assert pieces[:2] == [("a", 0, 700), ("b", 0, 700)]
    assert [len(records) for records in shipped][:2] == [1, 2]  # "c" fills b's bucket
    assert sum(numel for name, _, numel in pieces if name == "c") == 2000
    buffer.close()


def test_pieces_can_be_filled_without_the_whole_tensor():
    """``add_pieces`` asks for element ranges only (what a point-to-point receive does)."""
    full = torch.arange(1000, dtype=torch.float32).view(10, 100)
    buffer = SharedMemoryBuffer(256)
    receiver = _Receiver(buffer.path)
    asked = []

    def fill(destination, start, numel):
        asked.append((start, numel))
        destination.copy_(full.view(-1)[start : start + numel])

    writer = BucketWriter(buffer, 256, receiver)
    writer.add_pieces("w", torch.float32, (10, 100), fill)
    writer.flush()
    assert all(numel * 4 <= 256 for _, numel in asked) and len(asked) > 1
    assert torch.equal(receiver.received[0][1], full)
    buffer.close()


def test_bucket_smaller_than_one_slot_is_refused():
    buffer = SharedMemoryBuffer(64)
    with pytest.raises(ValueError, match="at least 64"):
        BucketWriter(buffer, 16, lambda bucket: None)
    buffer.close()


def test_buffer_file_is_removed_on_close():
    import os

    buffer = SharedMemoryBuffer(1024)
    assert os.path.exists(buffer.path)
    buffer.close()
    assert not os.path.exists(buffer.path)


def test_files_of_dead_trainers_are_removed(tmp_path):
    """A SIGKILLed trainer never unlinks its staging file; the next buffer removes it."""
    import os
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid now names no process
    stale = tmp_path / f"{STAGING_PREFIX}{child.pid}-{'a' * 32}"
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-{'b' * 32}"  # another buffer of a live process
    unrelated = tmp_path / "other-file"
    for path in (stale, live, unrelated):
        path.write_bytes(b"x" * 64)

    buffer = SharedMemoryBuffer(1024, directory=str(tmp_path))
    try:
        assert not stale.exists()
        assert live.exists() and unrelated.exists() and os.path.exists(buffer.path)
        assert remove_stale_buffers(str(tmp_path)) == []  # nothing else to remove
    finally:
        buffer.close()


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
    from r1core.testing.random_models import save_random_model

    for kind in ("qwen2_tied", "qwen3_moe"):
        model = save_random_model(tmp_path / kind, kind)
        source = ModuleWeightSource(model)
        assert isinstance(source, WeightSource)
        sent = dict(source.iter_hf_weights())
        saved = safetensors.load_file(str(tmp_path / kind / "model.safetensors"))
        assert sorted(sent) == sorted(saved)
        for name, tensor in saved.items():
            assert torch.equal(sent[name], tensor), name
