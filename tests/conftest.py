"""Test-wide set-up: Triton kernels run on CPU through the interpreter when there is no GPU,
tests marked ``gpu`` skip cleanly without CUDA, and no test module leaves a process group
to the next."""

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


@pytest.fixture(autouse=True, scope="module")
def _no_process_group_outlives_its_module():
    """A module that builds a policy in this process (which makes its one-rank process group
    and Megatron's groups) must not hand them to the next module: tests that initialise
    their own groups (tests/launch/test_group_plan.py) would find one already there."""
    import torch.distributed as dist

    before = dist.is_available() and dist.is_initialized()
    yield
    if before or not (dist.is_available() and dist.is_initialized()):
        return
    from r1core.parallel.groups import destroy_distributed

    destroy_distributed()
