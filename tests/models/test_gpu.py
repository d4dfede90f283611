"""CUDA paths: Transformer Engine spec, bf16, Megatron's DDP/optimizer/schedules, sequence
parallelism and the all-to-all MoE dispatcher. Skipped without CUDA (CI has none)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workload import loss_fn, micro_batches, run, token_block

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
HERE = Path(__file__).parent


def hf_logprobs(path: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(ids).logits
    return torch.log_softmax(logits, -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)


@needs_cuda
@pytest.mark.parametrize("kind", ["qwen2", "qwen2_tied", "qwen3_moe"])
def test_fp32_on_cuda_matches_transformers(checkpoints, kind):
    from r1core.models import build_policy

    policy = build_policy(checkpoints[kind], dtype=torch.float32, use_transformer_engine=False)
    ids = token_block(0, batch=3, seq=16)
    got = policy.logprobs(ids.cuda()).cpu()
    torch.testing.assert_close(got, hf_logprobs(checkpoints[kind], ids), atol=1e-4, rtol=0)
    packed = policy.logprobs([ids[0, :16], ids[1, :5]]).cpu()
    torch.testing.assert_close(packed[1, :4], hf_logprobs(checkpoints[kind], ids[1:2, :5])[0], atol=1e-4, rtol=0)


@needs_cuda
@pytest.mark.parametrize("kind", ["qwen2", "qwen3_moe"])
def test_bf16_training_with_megatron_optimizer(checkpoints, kind, tmp_path):
    """bf16 model, Megatron DDP + distributed optimizer + schedule (TE where installed)."""
    from r1core.models import OptimConfig, build_policy

    policy = build_policy(checkpoints[kind], dtype=torch.bfloat16, optim=OptimConfig(lr=3e-3))
    ids = token_block(0)
    got = policy.logprobs(ids.cuda()).cpu()
    torch.testing.assert_close(got, hf_logprobs(checkpoints[kind], ids), atol=0.15, rtol=0.05)
    batches = micro_batches()  # the policy moves the ids to its device; the loss moves the rest
    first = policy.train_step(batches, loss_fn)
    assert torch.isfinite(first["grad_norm"]) and float(first["grad_norm"]) > 0
    for _ in range(3):
        last = policy.train_step(batches, loss_fn)
    assert float(last["loss"]) < float(first["loss"])
    out = policy.export_hf(tmp_path / "export", dtype=torch.float32)
    assert (out / "model.safetensors.index.json").is_file()


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
@pytest.mark.distributed
@pytest.mark.parametrize("layout", [("qwen2", "2", "1", "1"), ("qwen3_moe", "1", "2", "1"),
                                    ("qwen3_moe", "1", "1", "2"), ("qwen3_moe", "2", "1", "2")])
def test_multi_gpu_layouts_match_single_gpu(checkpoints, layout, tmp_path):
    kind, tensor, pipeline, expert = layout
    from r1core.models import OptimConfig, build_policy

    ref = run(build_policy(checkpoints[kind], optim=OptimConfig(lr=1e-3, clip_grad=1.0)), {})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), R1CORE_TEST_SEQUENCE_PARALLEL=tensor)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           str(HERE / "_dist_worker.py"), str(checkpoints[kind]), str(out), tensor, pipeline, expert]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    for rank in range(2):
        got = torch.load(f"{out}.rank{rank}", weights_only=False)
        torch.testing.assert_close(got["logp"].cpu(), ref["logp"].cpu(), atol=1e-4, rtol=0)
        torch.testing.assert_close(got["logp_after"].cpu(), ref["logp_after"].cpu(), atol=2e-4, rtol=0)
