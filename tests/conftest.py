"""Test-wide set-up: Triton kernels run on CPU through the interpreter when there is no GPU,
and tests marked ``gpu`` skip cleanly without CUDA."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit function is defined, i.e. before r1core's kernels
    # are imported; the interpreter runs them on CPU tensors (slowly: keep shapes small).
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
