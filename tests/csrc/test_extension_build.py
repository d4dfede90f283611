"""The extension's build information, stale/missing-build detection and fallback, and the
coexistence of its C++ op library with the Python (Triton) fragments of the namespace."""

from __future__ import annotations

import textwrap

import pytest
import torch

from r1core.ops import _build_config


def test_build_info_describes_this_build(cpp, repo_root):
    info = cpp.BUILD_INFO
    assert info["torch_version"] == torch.__version__
    assert info["source_hash"] == _build_config.source_hash(repo_root / "csrc", info["has_cuda"])
    if torch.version.cuda is None:  # a CPU torch cannot host CUDA kernels
        assert not info["has_cuda"] and info["cuda_archs"] == []
    else:
        assert info["has_cuda"] == bool(info["cuda_archs"])
    assert info["cpu_capability"] in ("default", "avx2", "avx512")
    expected_lanes = {"avx2": 8, "avx512": 16}.get(info["cpu_capability"])
    assert expected_lanes is None or info["float_lanes"] == expected_lanes
    assert isinstance(info["openmp"], bool)
    assert cpp.build_problem(info) is None


def test_stale_builds_are_detected(cpp, tmp_path):
    info = dict(cpp.BUILD_INFO)
    assert "built against torch 0.0.1" in cpp.build_problem(dict(info, torch_version="0.0.1"))
    assert "stale" in cpp.build_problem(dict(info, source_hash="0" * 16))
    # Editing a source changes the hash; a CPU-only build ignores csrc/cuda/.
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cuda").mkdir()
    (tmp_path / "cpu" / "a.cpp").write_text("int a;")
    cpu_hash = _build_config.source_hash(tmp_path, with_cuda=False)
    (tmp_path / "cuda" / "k.cu").write_text("__global__ void k() {}")
    assert _build_config.source_hash(tmp_path, with_cuda=False) == cpu_hash
    assert _build_config.source_hash(tmp_path, with_cuda=True) != cpu_hash
    (tmp_path / "cpu" / "a.cpp").write_text("int b;")
    assert _build_config.source_hash(tmp_path, with_cuda=False) != cpu_hash


def test_arch_parsing():
    assert _build_config.gencode_flags("9.0a") == ["-gencode=arch=compute_90a,code=sm_90a"]
    assert _build_config.parse_archs("8.0; 9.0a;") == ["8.0", "9.0a"]
    with pytest.raises(ValueError, match="compute capability"):
        _build_config.parse_archs("hopper")


FALLBACK = textwrap.dedent(
    """
    import warnings, torch
    {setup}
    import r1core.ops as ops
    from r1core.testing import make_group_rewards
    # group_advantages prefers the cpp backend on CPU, so it is the op that falls back.
    rewards = make_group_rewards(4, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ops.group_advantages(rewards, group_size=3)
        again = ops.group_advantages(rewards, group_size=3)
    torch.testing.assert_close(got.advantages, ops.group_advantages(rewards, group_size=3, backend="reference").advantages)
    messages = [str(w.message) for w in caught if "falling back" in str(w.message)]
    print(len(messages))
    print(messages[0] if messages else "")
    print(ops.available("group_advantages", "cpu"))
    """
)


def test_missing_build_warns_once_and_falls_back(run_python):
    setup = "import sys; sys.modules['r1core._C'] = None  # as if the extension was never built"
    result = run_python(FALLBACK.format(setup=setup), env={"TRITON_INTERPRET": "0"})
    assert result.returncode == 0, result.stderr
    count, message, available = result.stdout.strip().splitlines()
    assert count == "1"
    assert "r1core._C is not built" in message and "pip install --no-build-isolation -e ." in message
    assert "'cpp'" not in available


def test_stale_build_warns_once_and_falls_back(cpp, run_python):
    setup = "import r1core.ops._build_config as c; c.source_hash = lambda *a: 'edited-sources'"
    result = run_python(FALLBACK.format(setup=setup), env={"TRITON_INTERPRET": "0"})
    assert result.returncode == 0, result.stderr
    count, message, _ = result.stdout.strip().splitlines()
    assert count == "1"
    assert "stale" in message


IMPORT_ORDER = textwrap.dedent(
    """
    import torch

    def python_fragment():
        # What the Triton backend does: custom ops added to the same namespace from Python.
        @torch.library.custom_op("r1core::probe_triton", mutates_args=())
        def probe(x: torch.Tensor) -> torch.Tensor:
            return x * 2

    def extension():
        import r1core.ops._cpp  # noqa: F401

    for step in {order}:
        {{"fragment": python_fragment, "extension": extension}}[step]()
    x = torch.arange(3.0)
    assert torch.equal(torch.ops.r1core.probe_triton(x), x * 2)
    stats = torch.ops.r1core.logprobs_stats(torch.ones(2, 3), torch.ones(4, 3), torch.zeros(2, dtype=torch.long), 1.0, False)
    assert stats.shape == (4, 2)
    print("ok")
    """
)


@pytest.mark.parametrize("order", [("fragment", "extension"), ("extension", "fragment")])
def test_cpp_library_coexists_with_python_fragments(cpp, run_python, order):
    result = run_python(IMPORT_ORDER.format(order=list(order)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_installed_package_needs_nothing_from_the_checkout(cpp, repo_root):
    """The build records where its sources were; the staleness check reads them only while
    that folder exists (a development install). A build whose folder is gone (a wheel
    installed elsewhere) is used as it is."""
    info = dict(cpp.BUILD_INFO)
    assert cpp.recorded_source_dir(info) == repo_root / "csrc"
    moved = dict(info, source_dir="/nonexistent/r1core-build/csrc", source_hash="0" * 16)
    assert cpp.recorded_source_dir(moved) is None
    assert cpp.build_problem(moved) is None  # no sources to compare with: nothing is stale
    assert "stale" in cpp.build_problem(dict(info, source_hash="0" * 16))


# --- the CUDA log-prob backward's allocation plan (csrc/logprobs_backward_plan.h) ------------


def test_cuda_backward_plan_at_the_target_shape_fits_512_mib(cpp):
    """N=16384, H=4096, V=151936, bf16: the plan the CUDA backward allocates from (compiled
    into the CPU build too) stays within 512 MiB beyond inputs and returned gradients, on the
    in-place cuBLAS path and on the path with a temporary alike."""
    tokens, vocab, hidden = 16384, 151936, 4096
    plan = cpp._C.logprobs_backward_plan(tokens, vocab, hidden, 2)
    mib = 2**20
    assert plan["accumulator_bytes"] == 4 * tokens * hidden  # fp32 grad_hidden beside the bf16 output
    assert plan["grad_logits_bytes"] == 2 * tokens * plan["chunk_columns"] <= 128 * mib
    assert plan["chunk_columns"] % 128 == 0 and plan["num_chunks"] == -(-vocab // plan["chunk_columns"])
    assert plan["temporary_bytes"] == 4 * hidden * plan["temporary_rows"] <= 32 * mib
    in_place = plan["accumulator_bytes"] + plan["grad_logits_bytes"]
    assert plan["peak_extra_bytes_in_place"] == in_place == 384 * mib
    assert plan["peak_extra_bytes_with_temporary"] == in_place + plan["temporary_bytes"] <= 512 * mib


@pytest.mark.parametrize(("tokens", "vocab", "hidden", "element_size"), [(1, 7, 16, 2), (300, 1031, 48, 4), (4096, 151936, 8192, 2)])
def test_cuda_backward_plan_other_shapes(cpp, tokens, vocab, hidden, element_size):
    plan = cpp._C.logprobs_backward_plan(tokens, vocab, hidden, element_size)
    assert 0 < plan["chunk_columns"] <= vocab and plan["num_chunks"] * plan["chunk_columns"] >= vocab
    # fp32 inputs accumulate into the returned gradient: no accumulator, no temporary.
    if element_size == 4:
        assert plan["accumulator_bytes"] == plan["temporary_bytes"] == 0
    assert plan["grad_logits_bytes"] == element_size * tokens * plan["chunk_columns"]
    assert plan["grad_logits_bytes"] <= max(128 * 2**20, element_size * tokens * 128)
