"""Benchmark of one training step of the Megatron-Core policy on a random Qwen3-0.6B-shaped model.

    python -m perf.bench_policy_step [--batch 8] [--length 2048] [--steps 3] [--tiny]

Builds a randomly initialised Qwen3 checkpoint of the 0.6B shape (hidden 1024, 28 layers,
16 query / 8 KV heads of 128, SwiGLU 3072, vocabulary 151936, tied embeddings) with
transformers, loads it as the r1core policy (``r1core.models.build_policy``, bf16 on CUDA)
and times ``Policy.train_step`` (forward, fused log-prob loss, backward, optimiser step).
Reports tokens/s and MFU: model FLOPs ``6 * P * tokens + 12 * layers * hidden * length *
tokens`` (attention scores and values, causal masking not discounted) over the device's
bf16 dense peak. ``--tiny`` runs a 2-layer model on the CPU in float32 (a rehearsal of the
code path, not a figure).

Needs megatron-core and transformers; without them it prints why and exits 0 (skipped), so
that ``make bench-gpu`` goes on.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time

import torch

from perf.harness import Result, device_name, peak_tflops_for, write_results

QWEN3_0_6B = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                  intermediate_size=3072, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=40960)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=128, vocab_size=512, tie_word_embeddings=True, max_position_embeddings=256)


def missing_requirements() -> list[str]:
    missing = []
    for name in ("megatron.core", "transformers"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package is absent
            found = False
        if not found:
            missing.append(name)
    return missing


def write_random_checkpoint(shape: dict, directory: str, dtype: torch.dtype) -> int:
    """A random Qwen3 checkpoint of ``shape`` in ``directory``; returns its parameter count."""
    import transformers

    config = transformers.Qwen3Config(**shape, torch_dtype=str(dtype).replace("torch.", ""))
    with torch.device("cpu"):
        model = transformers.Qwen3ForCausalLM(config).to(dtype)
    model.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--tiny", action="store_true", help="2-layer float32 model on the CPU (rehearsal)")
    args = parser.parse_args(argv)
    missing = missing_requirements()
    if missing:
        print(f"skipped: {', '.join(missing)} not installed (carry their wheels in .whl/ for make bench-gpu)")
        return 0
    from r1core.batch import MicroBatch
    from r1core.models.policy import build_policy

    on_gpu = torch.cuda.is_available() and not args.tiny
    shape = TINY if args.tiny or not on_gpu else QWEN3_0_6B
    dtype = torch.bfloat16 if on_gpu else torch.float32
    batch = args.batch or (8 if on_gpu else 2)
    length = args.length or (2048 if on_gpu else 32)
    device = torch.device("cuda" if on_gpu else "cpu")
    with tempfile.TemporaryDirectory(prefix="r1core-qwen3-") as directory:
        params = write_random_checkpoint(shape, directory, dtype)
        policy = build_policy(directory, dtype=dtype)
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, shape["vocab_size"], (batch, length), generator=generator).to(device)
        # Every position after the first is a trained token.
        micro_batch = MicroBatch(list(ids), torch.ones(batch, length - 1, device=device))

        def loss_fn(logp, entropy, micro_batch):
            return -logp.float().mean(), {}

        def step():
            out = policy.train_step([micro_batch], loss_fn)
            if on_gpu:
                torch.cuda.synchronize()
            return out

        step()  # warm-up: allocations, cuBLAS plans, Triton compiles
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - start) / args.steps
    tokens = batch * length
    flops = 6.0 * params * tokens + 12.0 * shape["num_hidden_layers"] * shape["hidden_size"] * length * tokens
    peak = peak_tflops_for(device_name(device)) if on_gpu else None
    tflops = flops / seconds / 1e12
    mfu = tflops / peak if peak else None
    note = f"{tokens / seconds:,.0f} tokens/s" + (f", MFU {100 * mfu:.1f}%" if mfu is not None else "")
    print(f"train step {seconds * 1e3:.1f} ms for {tokens} tokens: {note}, {tflops:.1f} TF/s ({params / 1e6:.0f}M parameters)")
    result = Result(f"B={batch} T={length}", "megatron-core policy train_step", seconds * 1e3, tflops=tflops,
                    peak_fraction=mfu, note=note, extra={"tokens_per_s": tokens / seconds, "parameters": params})
    meta = {"model": "Qwen3-0.6B shape, random" if shape is QWEN3_0_6B else "tiny Qwen3 (rehearsal)",
            "shape": f"B={batch} T={length}", "dtype": str(dtype).replace("torch.", ""),
            "flop basis": "6 P tokens + 12 L H T tokens", "device": device_name(device)}
    write_results("policy_train_step", device, [result], meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
