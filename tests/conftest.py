"""Test-wide set-up: Triton kernels run on CPU through the interpreter when there is no GPU,
tests marked ``gpu`` skip cleanly without CUDA, no test module leaves a process group to the
next, and ``--family-coverage`` prints the model family coverage table from this run's
outcomes (``family_coverage.py``)."""

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit function is defined, i.e. before r1core's kernels
    # are imported; the interpreter runs them on CPU tensors (slowly: keep shapes small).
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    parser.addoption("--family-coverage", nargs="?", const="", default=None, metavar="PATH",
                     help="print the model family x check table of this run's family_check tests "
                          "(and write it to PATH)")


def pytest_configure(config):
    config.addinivalue_line("markers", "family_check(check, family=None): the test proves CHECK for a model "
                                       "family (its 'kind' parameter unless family= is given)")
    out = config.getoption("--family-coverage")
    if out is not None:
        from family_coverage import FamilyCoverage

        config.pluginmanager.register(FamilyCoverage(Path(out) if out else None), "family-coverage")


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
