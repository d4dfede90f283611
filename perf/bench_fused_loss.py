"""Benchmark of ``fused_grpo_loss``: GRPO loss and its gradients straight from hidden states.

    python -m perf.bench_fused_loss [--device cuda] [--dtype bf16] [--batch 64] [--length 256]
                                    [--hidden 4096] [--vocab 151936] [--entropy-coef 0.0]

Defaults: B x T = 64 x 256 = 16384 tokens, H=4096, V=151936, bf16 on CUDA (the log-prob
target shape); a small fp32 shape on CPU (labelled CPU; Triton rows run in the interpreter
there when ``TRITON_INTERPRET=1``).

One training step (forward + backward) per row, FLOP basis ``8NHV`` as for the log-prob op.
Rows: for every r1core backend, the fused op, the unfused composition
``grpo_loss(fused_logprobs(...))`` and ``fused_logprobs`` alone with a plain sum as the
loss; the "overhead vs logprobs" column (in ``extra``) is what the loss adds over the bare
log-prob step (target <= 2% on H100). Plus the naive torch step (full fp32 logits,
log_softmax, gather, grpo_loss) and its ``torch.compile``.
"""

from __future__ import annotations

import argparse

import torch

from perf.bench_fused_logprobs import DTYPES, naive_logprobs
from perf.harness import Result, device_name, peak_tflops_for, time_ms, write_results
from r1core.ops import available, fused_grpo_loss, fused_logprobs, grpo_loss
from r1core.testing import make_grpo_loss_inputs, make_logprobs_inputs, peak_memory_bytes

LOSS_SETTINGS = dict(clip_low=0.2, clip_high=0.28, kl_coef=0.001, kl_estimator="k3", aggregation="token-mean")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--entropy-coef", type=float, default=0.0)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile (its compile takes tens of seconds)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if on_gpu else "fp32")]
    batch, length = args.batch or (64 if on_gpu else 4), args.length or (256 if on_gpu else 32)
    hidden_size = args.hidden or (4096 if on_gpu else 128)
    vocab = args.vocab or (151936 if on_gpu else 2053)
    reps = args.reps or (50 if on_gpu else 3)
    num_tokens = batch * length
    flops = 8.0 * num_tokens * hidden_size * vocab

    hidden, weight, labels = make_logprobs_inputs(num_tokens, hidden_size, vocab, dtype=dtype, device=device)
    labels = labels.view(batch, length)
    tokens = make_grpo_loss_inputs(batch, length, device=device, seed=1)
    with torch.no_grad():  # old/ref log-probs near the policy's, so the clip is active
        logp = fused_logprobs(hidden, weight, labels.reshape(-1)).view(batch, length).float()
    old_logp, ref_logp = (logp + 0.1 * torch.randn_like(logp)).clamp(max=0), (logp + 0.1 * torch.randn_like(logp)).clamp(max=0)
    advantages, mask = tokens["advantages"], tokens["mask"]
    settings = dict(LOSS_SETTINGS, ref_logp=ref_logp, entropy_coef=args.entropy_coef)
    need_entropy = args.entropy_coef != 0

    def unfused(h, w, backend):
        out = fused_logprobs(h, w, labels.reshape(-1), return_entropy=need_entropy, backend=backend, validate=False)
        logp_flat, entropy = out if need_entropy else (out, None)
        loss, _ = grpo_loss(logp_flat.view(batch, length), old_logp, advantages, mask, **{k: v for k, v in settings.items() if k != "entropy_coef"})
        if need_entropy:
            loss = loss - args.entropy_coef * (entropy.view(batch, length) * mask).sum() / mask.sum()
        return loss

    def naive(h, w):
        logp_flat, entropy = naive_logprobs(h, w, labels.reshape(-1), 1.0, need_entropy)
        loss, _ = grpo_loss(logp_flat.view(batch, length), old_logp, advantages, mask, backend="reference", **{k: v for k, v in settings.items() if k != "entropy_coef"})
        if need_entropy:
            loss = loss - args.entropy_coef * (entropy.view(batch, length) * mask).sum() / mask.sum()
        return loss

    steps = {"naive torch (fp32 logits) + grpo_loss": naive}
    if not args.no_compile:
        steps["torch.compile(naive + grpo_loss)"] = torch.compile(naive, dynamic=False)
    device_peak = peak_tflops_for(device_name(device)) if on_gpu else None
    for backend in available("fused_logprobs", device):
        suffix = " (interpreter)" if backend.startswith("triton") and device.type == "cpu" else ""
        steps[f"r1core {backend} logprobs only{suffix}"] = lambda h, w, b=backend: fused_logprobs(
            h, w, labels.reshape(-1), backend=b, validate=False
        ).sum()
        steps[f"r1core {backend} unfused{suffix}"] = lambda h, w, b=backend: unfused(h, w, b)
        steps[f"r1core {backend} fused{suffix}"] = lambda h, w, b=backend: fused_grpo_loss(
            h, w, labels, old_logp, advantages, mask, backend=b, validate=False, **settings
        )[0]

    gradient_bytes = (hidden.numel() + weight.numel()) * hidden.element_size()
    results: list[Result] = []
    logprobs_only_ms: dict[str, float] = {}
    for name, fn in steps.items():
        h, w = hidden.detach().requires_grad_(True), weight.detach().requires_grad_(True)

        def step():
            fn(h, w).backward()
            h.grad = w.grad = None  # counted at the peak, not carried into the next call

        try:
            _, peak = peak_memory_bytes(step, device)
            ms = time_ms(step, device, warmup=1 if not on_gpu else 3, reps=reps)
        except torch.cuda.OutOfMemoryError:
            results.append(Result("fwd+bwd", name, None, note="out of memory"))
            torch.cuda.empty_cache()
            continue
        note, extra = "", {}
        backend_key = name.split(" ")[1] if name.startswith("r1core") else None
        if backend_key and "logprobs only" in name:
            logprobs_only_ms[backend_key] = ms
        elif backend_key in logprobs_only_ms:
            overhead = ms / logprobs_only_ms[backend_key] - 1
            extra["overhead_vs_logprobs"] = overhead
            note = f"{100 * overhead:+.1f}% vs logprobs only"
        tflops = flops / ms / 1e9
        results.append(
            Result(
                "fwd+bwd", name, ms, tflops=tflops, peak_fraction=tflops / device_peak if device_peak else None,
                extra_memory_mib=(peak - 2 * gradient_bytes) / 2**20 if "fused" in name and "unfused" not in name else (peak - gradient_bytes) / 2**20,
                note=note, extra=extra,
            )
        )
        print(f"{name:48s} {ms:10.3f} ms {tflops:8.2f} TF/s {note}", flush=True)
        if on_gpu:
            torch.cuda.empty_cache()
    meta = {
        "device": device_name(device) if on_gpu else f"CPU ({device_name(device)})",
        "shape": f"B={batch} T={length} (N={num_tokens}) H={hidden_size} V={vocab}",
        "dtype": str(dtype).replace("torch.", ""),
        "loss": {k: v for k, v in LOSS_SETTINGS.items()} | {"entropy_coef": args.entropy_coef},
        "flop basis": "8NHV per step (2NHV forward, 6NHV backward with recompute)",
        "peak": f"{device_peak} TF/s bf16 dense ({device_name(device)})" if on_gpu else "n/a (CPU)",
        "extra memory": "peak above inputs minus the gradients (the fused op holds two copies of each at its peak: "
        "the ones it computed in forward and the scaled ones it returns; subtracted)",
    }
    path = write_results("fused_grpo_loss", device, results, meta)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
