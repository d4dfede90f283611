"""Benchmark of ``group_advantages``: B = 8192 rewards in groups of 8, 16 and 64, and ragged.

    python -m perf.bench_group_advantages [--batch 8192] [--reps 50]

The op is launch-bound (8192 float32 rewards are 32 KiB), so it reports microseconds per
call and kernel launches per call rather than GB/s. Per case and implementation:
``ms`` (device time on CUDA: ``triton.testing.do_bench``; wall time on CPU), ``host_us``
(back-to-back calls, one sync at the end: what a training step pays), and on CUDA the
number of kernels one call launches (``torch.profiler``). Target on H100: one launch and
<= 5 us at 8192 samples. Implementations side by side:

* ``triton op``: the registered op alone (``fixed_size`` / ragged), what a trainer calls.
* ``triton``, ``reference``: the public function with its validation and NaN check.
* ``naive torch``: reshape-based for equal groups; a per-group Python loop for ragged ones
  (the way verl's GRPO estimator is written).
* ``torch.compile(reference)``: inductor on the reference specification.

On CPU the Triton rows run in Triton's interpreter (only when ``TRITON_INTERPRET=1``): a
correctness path, not a performance figure.
"""

from __future__ import annotations

import argparse

import torch

from perf.harness import Result, environment, time_ms, write_results
from perf.profiling import host_us_per_call, launches_per_call
from r1core.ops import available, group_advantages, group_advantages_reference
from r1core.ops.group_advantages import dense_group_index
from r1core.testing import make_group_rewards


def naive_fixed(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    groups = rewards.view(-1, group_size)
    mean = groups.mean(1, keepdim=True)
    std = groups.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    flat = (groups.amax(1, keepdim=True) == groups.amin(1, keepdim=True)).expand_as(groups)
    advantages = torch.where(flat, torch.zeros_like(groups), (groups - mean) / (std + eps))
    return advantages.reshape(-1), flat.reshape(-1)


def naive_loop(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """One boolean-mask pass per group, as verl's estimator loops over prompts."""
    advantages = torch.zeros_like(rewards)
    for group in torch.unique(group_ids).tolist():  # host sync: the number of groups
        members = group_ids == group
        values = rewards[members]
        if values.numel() > 1:
            advantages[members] = (values - values.mean()) / (values.std() + eps)
    return advantages


def ragged_ids(num_samples: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Groups of 1 to 32 samples (mean ~8), shuffled: samples of a group are not contiguous."""
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 33, (num_samples,), generator=generator)
    ids = torch.repeat_interleave(torch.arange(num_samples), sizes)[:num_samples]
    return ids[torch.randperm(num_samples, generator=generator)].to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="print only; write no results file")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile (its compile takes tens of seconds)")
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="torch threads on CPU (default 1: OpenMP waits distort timings on a shared machine)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.cpu_threads)
    backends = available("group_advantages", device)
    results: list[Result] = []
    compiled_reference = torch.compile(group_advantages_reference, dynamic=False)

    for group_size in (8, 16, 64, "ragged"):
        case = f"B={args.batch} " + ("ragged (1-32, shuffled)" if group_size == "ragged" else f"group={group_size}")
        rewards = make_group_rewards(args.batch // 8, 8, device=device, seed=1)[: args.batch]
        if group_size == "ragged":
            raw_ids = ragged_ids(args.batch, device)
            kwargs = {"group_ids": raw_ids}
        else:
            raw_ids = torch.arange(args.batch, device=device) // group_size
            kwargs = {"group_size": group_size}
        dense = dense_group_index(raw_ids)
        expected = group_advantages_reference(rewards, dense, "grpo", 1e-6)
        impls = {}
        if "triton" in backends:
            from r1core.ops.group_advantages_triton import TritonGroupAdvantages  # noqa: I001

            op = TritonGroupAdvantages()
            if group_size == "ragged":
                impls["triton op (ragged, dense ids)"] = lambda: op(rewards, dense, "grpo", 1e-6)
            else:
                impls["triton op (fixed_size)"] = lambda gs=group_size: op.fixed_size(rewards, gs, "grpo", 1e-6)
            impls["triton (public fn)"] = lambda kw=kwargs: group_advantages(rewards, backend="triton", **kw)
        impls["reference (public fn)"] = lambda kw=kwargs: group_advantages(rewards, backend="reference", **kw)
        if not args.no_compile:
            impls["torch.compile(reference)"] = lambda: compiled_reference(rewards, dense, "grpo", 1e-6)
        if group_size == "ragged":
            impls["naive torch (per-group loop)"] = lambda: naive_loop(rewards, raw_ids)
        else:
            impls["naive torch (reshape)"] = lambda gs=group_size: naive_fixed(rewards, gs)

        for name, fn in impls.items():
            out = fn()
            advantages = out[0] if isinstance(out, tuple) else out
            # Never time a wrong result.
            torch.testing.assert_close(advantages.float(), expected.advantages, rtol=1e-4, atol=1e-4)
            ms = time_ms(fn, device, reps=args.reps)
            launches, device_us = launches_per_call(fn, device)
            slow = "loop" in name or (name.startswith("triton") and device.type == "cpu")
            host_us = host_us_per_call(fn, device, calls=10 if slow else 50 if device.type == "cpu" else 500)
            note = f"host {host_us:.1f} us/call" + ("" if launches is None else f"; {launches:g} launches/call")
            if name.startswith("triton") and device.type == "cpu":
                note += "; Triton CPU interpreter: not a performance figure"
            results.append(Result(case, name, ms, note=note, extra={
                "us": ms * 1e3, "host_us": host_us, "launches_per_call": launches, "device_us_profiler": device_us,
            }))
            print(f"{case:28s} {name:32s} {ms * 1e3:10.1f} us  host {host_us:10.1f} us  launches {launches}")

    if not args.no_write:
        meta = {
            "timing": "ms: do_bench median device time on CUDA, perf_counter median wall time on CPU; "
                      "extra.host_us: back-to-back calls, one sync per chunk, median of 5 chunks; extra.launches_per_call: "
                      "CUDA activities per call from torch.profiler",
            "target": "H100: one launch, <= 5 us at B=8192",
            "rewards": "0/1 accuracies with a per-group pass rate (inputs.make_group_rewards)",
            "mode": "grpo",
        }
        path = write_results("group_advantages", device, results, meta)
        print(f"wrote {path} ({environment(device)['device']})")


if __name__ == "__main__":
    main()
