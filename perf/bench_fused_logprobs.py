"""Benchmark of ``fused_logprobs``: log p(label) (+ entropy) from hidden states and LM head.

    python -m perf.bench_fused_logprobs [--device cuda] [--dtype bf16] [--tokens 16384]
                                        [--hidden 4096] [--vocab 151936] [--entropy]

Defaults: the H100 target shape (N=16384, H=4096, V=151936, bf16) on CUDA; a small fp32
shape on CPU (figures labelled CPU; the Triton rows there run in Triton's interpreter when
``TRITON_INTERPRET=1``: a correctness path, not a performance figure).

FLOP basis, stated once for every implementation: forward ``2NHV`` (the logits GEMM);
forward+backward ``8NHV`` (``2NHV`` forward, ``6NHV`` backward: recomputed logits,
``dlogits @ W`` and ``dlogits^T @ hidden``). Implementations that keep the logits do fewer
FLOPs than the basis credits them with, which is the point of comparing at equal basis.
Fraction of peak: against the device's bf16 dense peak (``perf.harness.DEVICE_PEAKS``), CUDA only.
Extra memory: peak allocation above the inputs, minus the returned gradients.
Targets on H100 (bf16, target shape): forward >= 700 TF/s, forward+backward >= 650 TF/s,
<= 512 MiB extra.

Side by side: naive torch (full fp32 logits, log_softmax, gather), ``torch.compile`` of the
same, every r1core backend usable on the device, and Liger-Kernel's fused linear
cross-entropy and QuACK's linear cross-entropy (``reduction="none"`` gives -logp per token;
no entropy) where they import.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch

from perf.harness import Result, device_name, peak_tflops_for, time_ms, write_results
from r1core.kernels.fused_logprobs import fp32_accumulation_path
from r1core.ops import available, fused_logprobs
from r1core.testing import make_logprobs_inputs, peak_memory_bytes

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def naive_logprobs(hidden, weight, labels, temperature, need_entropy):
    """What most RL codebases do: full logits in fp32, log_softmax, gather."""
    logits = (hidden @ weight.T).float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    logp = logprobs.gather(-1, labels[:, None]).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1) if need_entropy else None
    return logp, entropy


def liger_logprobs():
    """Liger-Kernel's fused linear cross-entropy as a log-prob op, or None if absent."""
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    loss_module = LigerFusedLinearCrossEntropyLoss(reduction="none")

    def fn(hidden, weight, labels, temperature, need_entropy):
        if temperature != 1.0:
            hidden = hidden / temperature
        out = loss_module(weight, hidden, labels)
        out = out[0] if isinstance(out, tuple) else out
        return -out, None

    return fn


def quack_logprobs():
    """QuACK's linear cross-entropy (``reduction="none"``: -logp per token), or None if absent."""
    try:
        from quack.linear_cross_entropy import linear_cross_entropy_func
    except Exception:  # noqa: BLE001 (absent, or built for another torch/CUDA)
        return None

    def fn(hidden, weight, labels, temperature, need_entropy):
        if temperature != 1.0:
            hidden = hidden / temperature
        return -linear_cross_entropy_func(hidden, weight, None, labels, reduction="none"), None

    return fn


def implementations(device: torch.device, compile_naive: bool = True) -> dict[str, Callable[..., Any]]:
    impls: dict[str, Callable[..., Any]] = {"naive torch (fp32 logits)": naive_logprobs}
    if compile_naive:
        impls["torch.compile(naive)"] = torch.compile(naive_logprobs, dynamic=False)
    for backend in available("fused_logprobs", device):

        def fn(hidden, weight, labels, temperature, need_entropy, backend=backend):
            out = fused_logprobs(
                hidden, weight, labels, temperature=temperature, return_entropy=need_entropy, backend=backend, validate=False
            )
            return out if need_entropy else (out, None)

        label = f"r1core {backend}" + (" (interpreter)" if backend.startswith("triton") and device.type == "cpu" else "")
        impls[label] = fn
    if device.type == "cuda":
        for name, make in (("liger fused linear CE", liger_logprobs), ("quack linear CE", quack_logprobs)):
            peer = make()
            if peer is not None:
                impls[name] = peer
    return impls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None)
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--entropy", action="store_true", help="also compute (and differentiate) the entropy")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="substrings of implementation names to run")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile (its compile takes tens of seconds)")
    parser.add_argument("--result-name", default="fused_logprobs", help="op part of the results file name")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if on_gpu else "fp32")]
    num_tokens = args.tokens or (16384 if on_gpu else 128)
    hidden_size = args.hidden or (4096 if on_gpu else 128)
    vocab = args.vocab or (151936 if on_gpu else 2053)
    reps = args.reps or (100 if on_gpu else 3)
    flops_fwd = 2.0 * num_tokens * hidden_size * vocab

    peak = peak_tflops_for(device_name(device)) if on_gpu else None
    # Made on the device: at the target shape the greedy labels alone are a 2e13-FLOP product.
    hidden, weight, labels = make_logprobs_inputs(num_tokens, hidden_size, vocab, dtype=dtype, device=device)
    gradient_bytes = (hidden.numel() + weight.numel()) * hidden.element_size()
    reference_logp = None
    results: list[Result] = []
    for name, impl in implementations(device, compile_naive=not args.no_compile).items():
        if args.only and not any(s in name for s in args.only):
            continue
        need_entropy = args.entropy and not name.startswith(("liger", "quack"))
        for case, flops in (("fwd", flops_fwd), ("fwd+bwd", 4 * flops_fwd)):
            h = hidden.detach().requires_grad_(case == "fwd+bwd")
            w = weight.detach().requires_grad_(case == "fwd+bwd")

            def step():
                h.grad = w.grad = None
                logp, entropy = impl(h, w, labels, args.temperature, need_entropy)
                if case == "fwd+bwd":
                    loss = logp.float().sum() + (entropy.float().sum() if entropy is not None else 0.0)
                    loss.backward()
                h.grad = w.grad = None  # counted at the peak, not carried into the next call
                return logp.detach()

            try:
                logp, peak = peak_memory_bytes(step, device)
                ms = time_ms(step, device, warmup=1 if not on_gpu else 3, reps=reps)
            except torch.cuda.OutOfMemoryError:
                results.append(Result(case, name, None, note="out of memory"))
                torch.cuda.empty_cache()
                continue
            extra = peak - (gradient_bytes if case == "fwd+bwd" else 0)
            if reference_logp is None:
                reference_logp = logp.float()
            deviation = (logp.float() - reference_logp).abs().max().item()
            tflops = flops / ms / 1e9
            results.append(
                Result(
                    case, name, ms, tflops=tflops,
                    peak_fraction=tflops / peak if on_gpu and peak else None,
                    extra_memory_mib=extra / 2**20,
                    note=f"max abs dlogp vs first row {deviation:.2e}" + ("" if need_entropy or not args.entropy else "; no entropy"),
                )
            )
            print(f"{case:8s} {name:34s} {ms:10.3f} ms {tflops:8.2f} TF/s  extra {extra / 2**20:9.1f} MiB", flush=True)
            del logp
            if on_gpu:
                torch.cuda.empty_cache()
    meta = {
        "device": device_name(device) if on_gpu else f"CPU ({device_name(device)})",
        "shape": f"N={num_tokens} H={hidden_size} V={vocab}",
        "dtype": str(dtype).replace("torch.", ""),
        "temperature": args.temperature,
        "entropy": args.entropy,
        "flop basis": "fwd 2NHV; fwd+bwd 8NHV (6NHV backward with recompute)",
        "peak": f"{peak} TF/s bf16 dense ({device_name(device)})" if on_gpu else "n/a (CPU)",
        "fp32 accumulation of grad_hidden": fp32_accumulation_path(device),
        "extra memory": "peak allocation above inputs, minus the returned gradients",
    }
    path = write_results(args.result_name, device, results, meta)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
