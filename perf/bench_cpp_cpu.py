"""CPU benchmark: the compiled ``cpp`` backend against the PyTorch ``reference`` backend.

Decides the automatic backend order on CPU (``PREFERENCE["cpu"]`` in r1core/ops/_backend.py).
Each case times the public op (forward + backward where the op is differentiable) with the
shared input factories, on every thread torch is allowed to use.

    python perf/bench_cpp_cpu.py [--quick] [--no-write]

Writes perf/results/cpp_backend_threads<n>_cpu_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.harness import Result, time_ms, write_results  # noqa: E402
from r1core import ops  # noqa: E402
from r1core.testing import make_group_rewards, make_grpo_loss_inputs, make_logprobs_inputs  # noqa: E402

BACKENDS = ("reference", "cpp")


def bench_logprobs(results: list[Result], num_tokens: int, hidden_size: int, vocab: int, dtype: torch.dtype, reps: int) -> None:
    hidden, weight, labels = make_logprobs_inputs(num_tokens, hidden_size, vocab, dtype=dtype, requires_grad=True)
    case = f"fused_logprobs N={num_tokens} H={hidden_size} V={vocab} {str(dtype).removeprefix('torch.')}"
    for with_backward in (False, True):
        # forward: one GEMM (2NHV); backward: recompute + two GEMMs (6NHV).
        flops = 2 * num_tokens * hidden_size * vocab * (4 if with_backward else 1)
        for backend in BACKENDS:

            def step():
                logp, entropy = ops.fused_logprobs(hidden, weight, labels, return_entropy=True, backend=backend)
                if with_backward:
                    (logp.sum() + 0.1 * entropy.sum()).backward()
                    hidden.grad = weight.grad = None

            ms = time_ms(step, torch.device("cpu"), warmup=1, reps=reps)
            results.append(Result(f"{case} {'fwd+bwd' if with_backward else 'fwd'}", backend, ms, tflops=flops / ms / 1e9,
                                  note="TFLOP/s counts GEMM FLOPs"))


def bench_grpo_loss(results: list[Result], batch: int, length: int, reps: int) -> None:
    inputs = make_grpo_loss_inputs(batch, length, requires_grad=True)
    # Bytes of the five [B, T] float32 inputs read in forward and again in backward.
    traffic = 2 * 5 * 4 * batch * length
    for backend in BACKENDS:

        def step():
            loss, _ = ops.grpo_loss(inputs["logp"], inputs["old_logp"], inputs["advantages"], inputs["mask"],
                                    ref_logp=inputs["ref_logp"], kl_coef=0.01, clip_high=0.28, dual_clip=3.0,
                                    rollout_logp=inputs["rollout_logp"], is_cap=2.0, backend=backend)
            loss.backward()
            inputs["logp"].grad = None

        ms = time_ms(step, torch.device("cpu"), warmup=2, reps=reps)
        results.append(Result(f"grpo_loss B={batch} T={length} fwd+bwd", backend, ms, gbps=traffic / ms / 1e6,
                              note="GB/s of the 5 fp32 [B,T] inputs read twice"))


def bench_advantages(results: list[Result], num_groups: int, group_size: int, reps: int) -> None:
    rewards = make_group_rewards(num_groups, group_size, binary=False)
    ids = torch.randperm(num_groups * group_size) % num_groups
    for label, kwargs in (("fixed groups", {"group_size": group_size}), ("ragged ids", {"group_ids": ids})):
        for backend in BACKENDS:
            ms = time_ms(lambda: ops.group_advantages(rewards, backend=backend, **kwargs), torch.device("cpu"), warmup=3, reps=reps * 5)
            results.append(Result(f"group_advantages B={num_groups * group_size} G={group_size} {label}", backend, ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repetitions (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not write perf/results/")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 5
    results: list[Result] = []
    if args.quick:
        bench_logprobs(results, 64, 64, 1031, torch.float32, reps)
        bench_grpo_loss(results, 16, 256, reps)
        bench_advantages(results, 64, 8, reps)
    else:
        for dtype in (torch.float32, torch.bfloat16):
            bench_logprobs(results, 512, 512, 8192, dtype, reps)
        bench_grpo_loss(results, 64, 2048, reps)
        bench_advantages(results, 512, 16, reps)
    for r in results:
        extra = f"{r.tflops:.3f} TFLOP/s" if r.tflops else (f"{r.gbps:.1f} GB/s" if r.gbps else "")
        print(f"{r.case:60s} {r.impl:10s} {r.ms:9.3f} ms  {extra}")
    if not args.no_write:
        from r1core.ops import _cpp

        meta = {
            "threads": torch.get_num_threads(),
            "build": {k: _cpp.BUILD_INFO[k] for k in ("cpu_capability", "openmp", "source_hash")},
            "quick": args.quick,
            "note": "CPU shared with other jobs while measured; medians of a few repetitions",
        }
        print(write_results(f"cpp_backend_threads{torch.get_num_threads()}", torch.device("cpu"), results, meta))


if __name__ == "__main__":
    main()
