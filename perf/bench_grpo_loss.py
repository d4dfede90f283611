"""Benchmark of ``grpo_loss``: forward and forward + backward, GB/s and fraction of H100 HBM.

    python -m perf.bench_grpo_loss [--shapes 256x4096,512x8192] [--reps 20]

Defaults: bf16 inputs at B x T = 256 x 4096, 512 x 4096, 1024 x 8192 on CUDA; float32 at
8 x 512 on CPU. Two option sets per shape: ``plain`` (logp, old_logp, advantages, mask) and
``full`` (+ ref_logp with k3 KL, dual clip, truncated IS with rollout_logp).

Byte basis (the same for every implementation: what a fused kernel must move at least):
forward reads each ``[B, T]`` input once (log-prob tensors in the input dtype, the bool mask
1 B/token) plus the ``[B]`` float32 advantages, and writes ``[B, 8]`` float32 row stats;
forward + backward adds one more read of the same inputs and the write of ``grad_logp`` in
the input dtype. GB/s = bytes / time; fraction of peak = GB/s / 3350 (H100 SXM HBM3).

Implementations side by side: ``triton`` (this repo's kernels through the public op),
``reference`` (the op's PyTorch backend), ``naive torch`` (per-token terms as ``[B, T]``
tensors and autograd, the way most trainers write it), and ``torch.compile`` of both.
On CPU the Triton rows run in Triton's interpreter (only with ``TRITON_INTERPRET=1``): a
correctness path, not a performance figure.
"""

from __future__ import annotations

import argparse

import torch

from perf.harness import H100_HBM_TBPS, Result, environment, peak_extra_memory_mib, time_ms, write_results
from r1core.ops import available, grpo_loss, grpo_token_terms
from r1core.ops.grpo_loss import make_clip_params
from r1core.testing import make_grpo_loss_inputs

OPTIONS = {
    "plain": {},
    "full": {"kl_coef": 0.01, "kl_estimator": "k3", "dual_clip": 3.0, "is_cap": 2.0},
}


def naive_loss(x: dict, kl_coef=0.0, kl_estimator="k3", dual_clip=None, is_cap=None):
    """Per-token terms as full ``[B, T]`` tensors, token-mean aggregation, plain autograd."""
    params = make_clip_params(0.2, 0.2, dual_clip, kl_estimator, is_cap)
    logp = x["logp"].float()
    cast = lambda t: None if t is None else t.float()  # noqa: E731
    terms = grpo_token_terms(
        logp, cast(x["old_logp"]), x["advantages"].float()[:, None].expand_as(logp),
        cast(x["ref_logp"]) if kl_coef else None, cast(x["rollout_logp"]) if is_cap else None, params,
    )
    mask = x["mask"].float()
    return ((terms["pg"] + kl_coef * terms["kl"]) * mask).sum() / mask.sum()


def op_loss(x: dict, backend: str, kl_coef=0.0, kl_estimator="k3", dual_clip=None, is_cap=None):
    loss, _ = grpo_loss(
        x["logp"], x["old_logp"], x["advantages"], x["mask"], ref_logp=x["ref_logp"] if kl_coef else None,
        kl_coef=kl_coef, kl_estimator=kl_estimator, dual_clip=dual_clip,
        rollout_logp=x["rollout_logp"] if is_cap else None, is_cap=is_cap, backend=backend,
    )
    return loss


def bytes_moved(x: dict, options: dict, backward: bool) -> int:
    """Minimum bytes of the op (see the module docstring)."""
    logp = x["logp"]
    per_tensor = logp.numel() * logp.element_size()
    num_logp_inputs = 2 + bool(options.get("kl_coef")) + bool(options.get("is_cap"))
    reads = num_logp_inputs * per_tensor + x["mask"].numel() * x["mask"].element_size() + x["advantages"].numel() * 4
    forward = reads + logp.shape[0] * 8 * 4
    return forward + (reads + per_tensor if backward else 0)


def default_shapes(device: torch.device) -> list[tuple[int, int]]:
    return [(256, 4096), (512, 4096), (1024, 8192)] if device.type == "cuda" else [(8, 512)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=None, help="comma-separated BxT, e.g. 256x4096,1024x8192")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    parser.add_argument("--no-write", action="store_true", help="print only; write no results file")
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="torch threads on CPU (default 1: OpenMP waits distort timings on a shared machine)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.cpu_threads)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = default_shapes(device) if args.shapes is None else [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
    backends = available("grpo_loss", device)
    results: list[Result] = []

    for batch, length in shapes:
        x = make_grpo_loss_inputs(batch, length, dtype=dtype, device=device, spread=0.3, requires_grad=True)
        for option_name, options in OPTIONS.items():
            case = f"{batch}x{length} {str(dtype).removeprefix('torch.')} {option_name}"
            impls = {}
            if "triton" in backends:
                impls["triton"] = lambda o=options: op_loss(x, "triton", **o)
            impls["reference"] = lambda o=options: op_loss(x, "reference", **o)
            impls["naive torch"] = lambda o=options: naive_loss(x, **o)
            if not args.no_compile:
                torch._dynamo.reset()
                compiled_naive = torch.compile(naive_loss, dynamic=False)
                compiled_op = torch.compile(op_loss, dynamic=False)
                impls["torch.compile(naive torch)"] = lambda o=options, f=compiled_naive: f(x, **o)
                impls["torch.compile(reference)"] = lambda o=options, f=compiled_op: f(x, "reference", **o)
            expected = naive_loss({k: v.detach() if v.is_floating_point() else v for k, v in x.items()}, **options)
            for name, loss_fn in impls.items():
                # Never time a wrong result.
                torch.testing.assert_close(loss_fn().float(), expected.float(), rtol=2e-3, atol=1e-5)

                def forward_backward(f=loss_fn):
                    x["logp"].grad = None
                    f().backward()

                note = "Triton CPU interpreter: not a performance figure" if name == "triton" and device.type == "cpu" else ""
                for phase, fn, backward in (("fwd", loss_fn, False), ("fwd+bwd", forward_backward, True)):
                    ms = time_ms(fn, device, reps=args.reps)
                    gbps = bytes_moved(x, options, backward) / (ms * 1e-3) / 1e9
                    peak = gbps / (H100_HBM_TBPS * 1e3) if device.type == "cuda" else None
                    memory = peak_extra_memory_mib(fn, device)
                    results.append(Result(f"{case} {phase}", name, ms, gbps=gbps, peak_fraction=peak, extra_memory_mib=memory, note=note))
                    fraction = "" if peak is None else f" {100 * peak:5.1f}% of H100 HBM"
                    print(f"{case + ' ' + phase:34s} {name:28s} {ms:9.3f} ms {gbps:9.1f} GB/s{fraction}")

    if not args.no_write:
        meta = {
            "bytes": "minimum traffic: fwd reads each [B,T] input once (log-probs in the input dtype, "
                     "bool mask 1 B) + [B] fp32 advantages, writes [B,8] fp32; fwd+bwd adds a second read "
                     "and the [B,T] grad write in the input dtype",
            "peak": f"fraction of H100 SXM HBM {H100_HBM_TBPS} TB/s (CUDA only; CPU figures are labelled CPU)",
            "timing": "do_bench median on CUDA (L2 flushed), perf_counter median on CPU",
            "aggregation": "token-mean; clip 0.2/0.2; full = k3 KL (coef 0.01), dual clip 3, IS cap 2",
        }
        path = write_results("grpo_loss", device, results, meta)
        print(f"wrote {path} ({environment(device)['device']})")


if __name__ == "__main__":
    main()
