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
