"""The Triton kernels compile for H100 (sm_90) without a GPU, and spill no registers.

Triton's CPU interpreter checks what the kernels compute but never compiles them; this test
runs Triton's real compiler (to PTX, then Triton's bundled ``ptxas`` to a cubin) for the
launch configurations the ops use, in a subprocess without ``TRITON_INTERPRET`` (under the
interpreter ``@triton.jit`` functions cannot be compiled). Resource usage is read back with
the bundled ``cuobjdump``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
NVIDIA_BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def _configs():
    """(name, kernel, signature, constexprs, num_warps) of the launches r1core makes."""
    import triton.language as tl

    from r1core.kernels import group_advantages as advantages, grpo_loss

    tensors = ["logp_ptr", "old_ptr", "adv_ptr", "mask_ptr", "ref_ptr", "rollout_ptr"]
    strides = {n: "i64" for n in ("stride_logp", "stride_old", "stride_adv_b", "stride_adv_t", "stride_mask", "stride_ref", "stride_rollout")}
    scalars = {n: "fp64" for n in ("clip_lower", "clip_upper", "neg_dual_clip", "is_cap")}
    for dtype, compute in (("bf16", tl.float32), ("fp32", tl.float32), ("fp64", tl.float64)):
        stats_type = "fp64" if dtype == "fp64" else "fp32"
        inputs = {n: f"*{dtype}" for n in tensors} | {"adv_ptr": "*fp32" if dtype != "fp64" else "*fp64", "mask_ptr": "*i1"}
        for options in (False, True):
            consts = {"HAS_REF": options, "HAS_IS": options, "USE_DUAL": options, "ADV_PER_ROW": not options,
                      "KL_ESTIMATOR": 2, "COMPUTE": compute, "BLOCK_T": grpo_loss.block_t(8192)[0]}
            flags = {k: "constexpr" for k in consts}
            yield (f"grpo_row_stats {dtype} options={options}", grpo_loss.grpo_row_stats_kernel,
                   inputs | {"stats_ptr": f"*{stats_type}", "num_cols": "i32"} | strides | scalars | flags, consts, grpo_loss.block_t(8192)[1])
            yield (f"grpo_row_backward {dtype} options={options}", grpo_loss.grpo_row_backward_kernel,
                   {"grad_pg_rows_ptr": "*fp32", "grad_kl_rows_ptr": "*fp32"} | inputs | {"grad_ptr": f"*{dtype}", "num_cols": "i32"}
                   | strides | {"stride_grad": "i64"} | scalars | flags, consts, grpo_loss.block_t(8192)[1])
    for num_groups, group_size in ((1024, 8), (128, 64), (1, 8192)):
        _, groups, block, warps = advantages.fixed_launch_config(num_groups, group_size)
        consts = {"MODE": 0, "GROUPS": groups, "BLOCK_SIZE": block}
        yield (f"fixed_group_advantages group={group_size}", advantages.fixed_group_advantages_kernel,
               {"rewards_ptr": "*fp32", "advantages_ptr": "*fp32", "zero_variance_ptr": "*i1", "num_groups": "i32",
                "group_size": "i32", "eps": "fp32", "MODE": "constexpr", "GROUPS": "constexpr", "BLOCK_SIZE": "constexpr"}, consts, warps)
    ragged = {"rewards_ptr": "*fp32", "group_ids_ptr": "*i64", "workspace_ptr": "*fp32", "pivot_ptr": "*fp32",
              "num_samples": "i32", "BLOCK": "constexpr"}
    yield "ragged_sums", advantages.ragged_sums_kernel, ragged, {"BLOCK": advantages.RAGGED_BLOCK}, 4
    yield "ragged_deviations", advantages.ragged_deviations_kernel, ragged, {"BLOCK": advantages.RAGGED_BLOCK}, 4
    yield from _logprob_configs()
    yield ("ragged_finish", advantages.ragged_finish_kernel,
           {"rewards_ptr": "*fp32", "group_ids_ptr": "*i64", "workspace_ptr": "*fp32", "advantages_ptr": "*fp32",
            "zero_variance_ptr": "*i1", "num_samples": "i32", "eps": "fp32", "MODE": "constexpr", "BLOCK": "constexpr"},
           {"MODE": 2, "BLOCK": advantages.RAGGED_BLOCK}, 4)


def _logprob_configs():
    """The second fused log-prob design (persistent, tensor descriptors) and the fp32
    accumulation kernel, at their H100 tile configuration, bf16."""
    from r1core.kernels import fused_logprobs, fused_logprobs_persistent as persistent

    bn, bv, bk, group, warps, stages = persistent._PERSISTENT_CONFIGS[0]
    tiles = {"BLOCK_N": bn, "BLOCK_V": bv, "BLOCK_K": bk, "GROUP_N": group}
    ints = lambda *names: {n: "i32" for n in names}  # noqa: E731
    for use_tma in (True, False):
        consts = {"NEED_ENTROPY": True, "USE_TMA": use_tma, "INPUT_PRECISION": "ieee", "UPCAST": False} | tiles
        yield (f"persistent stats tma={use_tma}", persistent._stats_persistent_kernel,
               {"hidden_ptr": "*bf16", "weight_ptr": "*bf16", "partial_ptr": "*fp32"}
               | ints("N", "H", "V", "num_splits", "tiles_per_split", "num_programs", "stride_hn", "stride_hk", "stride_wv", "stride_wk")
               | {"scale2": "fp32"} | {k: "constexpr" for k in consts}, consts, warps)
        consts = {"HAS_ENTROPY": True, "USE_TMA": use_tma, "INPUT_PRECISION": "ieee", "UPCAST": False} | tiles
        yield (f"persistent dlogits tma={use_tma}", persistent._dlogits_persistent_kernel,
               {"hidden_ptr": "*bf16", "weight_ptr": "*bf16", "lse_ptr": "*fp32", "entropy_ptr": "*fp32",
                "grad_logp_ptr": "*fp32", "grad_entropy_ptr": "*fp32", "dlogits_ptr": "*bf16"}
               | ints("N", "H", "V_CHUNK", "num_programs", "stride_hn", "stride_hk", "stride_wv", "stride_wk", "stride_dn")
               | {"scale2": "fp32", "inv_temperature": "fp32"} | {k: "constexpr" for k in consts}, consts, warps)
    consts = {"BLOCK_N": 32, "BLOCK_K": 64}
    yield ("persistent target logit", persistent._target_logit_kernel,
           {"hidden_ptr": "*bf16", "weight_ptr": "*bf16", "labels_ptr": "*i64", "out_ptr": "*fp32"}
           | ints("N", "H", "V", "stride_hn", "stride_hk", "stride_wv", "stride_wk") | {"inv_temperature": "fp32"}
           | {k: "constexpr" for k in consts}, consts, 4)
    consts = {"INPUT_PRECISION": "ieee", "UPCAST": False, "BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 16}
    yield ("fp32 accumulate matmul", fused_logprobs._accumulate_matmul_kernel.fn,
           {"a_ptr": "*bf16", "b_ptr": "*bf16", "c_ptr": "*fp32"}
           | ints("M", "N", "K", "stride_am", "stride_ak", "stride_bk", "stride_bn", "stride_cm")
           | {k: "constexpr" for k in consts}, consts, 8)


def _compile_all() -> list[dict]:
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    report = []
    for name, kernel, signature, constexprs, num_warps in _configs():
        # A kernel's own @triton.jit(debug=True) (device assertions) is a launch option.
        options = {"num_warps": num_warps, "debug": bool(getattr(kernel, "debug", False))}
        compiled = triton.compile(
            ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
            target=GPUTarget("cuda", 90, 32), options=options,
        )
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(compiled.asm["cubin"])
            cubin.flush()
            usage = subprocess.run([str(NVIDIA_BIN / "cuobjdump"), "--dump-resource-usage", cubin.name],
                                   capture_output=True, text=True, check=True).stdout
        fields = dict(item.split(":", 1) for line in usage.splitlines() if "REG:" in line for item in line.split())
        report.append({"name": name, "registers": int(fields["REG"]), "local_bytes": int(fields["LOCAL"]),
                       "asserts": "__assertfail" in compiled.asm["ptx"]})
    return report


@pytest.mark.skipif(not (NVIDIA_BIN / "ptxas").exists() or not (NVIDIA_BIN / "cuobjdump").exists(),
                    reason="triton's bundled ptxas/cuobjdump are absent")
def test_kernels_compile_for_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    run = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(report) == 24, report  # 12 loss kernels, 6 advantage kernels, 6 log-prob kernels
    for entry in report:
        assert entry["local_bytes"] == 0, f"{entry['name']} spills to local memory: {entry}"
        assert entry["registers"] <= 255, entry
    # The NaN check of group_advantages is a device assertion in the kernels that first read
    # the rewards, and only there (no assertion overhead in the loss kernels).
    asserting = {entry["name"] for entry in report if entry["asserts"]}
    assert asserting == {f"fixed_group_advantages group={g}" for g in (8, 64, 8192)} | {"ragged_sums"}, asserting


if __name__ == "__main__":
    print(json.dumps(_compile_all()))
