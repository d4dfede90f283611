"""The learning-rate schedule (warmup, linear and cosine decay) as the policy applies it, its
step count carried by checkpoints, fp32 master weights for bf16 parameters, and activation
recomputation."""

from __future__ import annotations

import math

import pytest
import torch

from workload import loss_fn, micro_batches, token_block

from r1core.models.optim import OptimConfig


def test_lr_at_warmup_then_decay():
    constant = OptimConfig(lr=1.0)
    assert [constant.lr_at(s) for s in (0, 5, 500)] == [1.0, 1.0, 1.0]
    warm = OptimConfig(lr=2.0, warmup_steps=4)
    assert [warm.lr_at(s) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    linear = OptimConfig(lr=1.0, lr_schedule="linear", warmup_steps=2, total_steps=7, min_lr_ratio=0.2)
    assert [round(linear.lr_at(s), 6) for s in range(9)] == [0.5, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2, 0.2]
    cosine = OptimConfig(lr=1.0, lr_schedule="cosine", total_steps=5)
    assert [round(cosine.lr_at(s), 6) for s in range(5)] == [1.0, round(0.5 * (1 + math.cos(math.pi / 4)), 6), 0.5,
                                                            round(0.5 * (1 + math.cos(3 * math.pi / 4)), 6), 0.0]
    with pytest.raises(ValueError, match="total_steps"):
        OptimConfig(lr_schedule="cosine", warmup_steps=5, total_steps=5)
    with pytest.raises(ValueError, match="lr_schedule"):
        OptimConfig(lr_schedule="step")


def test_policy_config_builds_the_schedule():
    from r1core.models.policy_config import PolicyConfig

    config = PolicyConfig(lr=1e-5, lr_schedule="cosine", warmup_steps=3, min_lr_ratio=0.1)
    optim = config.optim(2e-5, total_steps=10)
    assert (optim.lr, optim.lr_schedule, optim.warmup_steps, optim.total_steps, optim.min_lr_ratio) == (
        2e-5, "cosine", 3, 10, 0.1)
    # Too few steps for a decay after the warmup: constant after it.
    assert config.optim(total_steps=2).lr_schedule == "constant"


def test_train_step_follows_the_schedule_and_a_checkpoint_keeps_its_place(checkpoints):
    from r1core.models import build_policy

    optim = OptimConfig(lr=1e-2, lr_schedule="linear", warmup_steps=2, total_steps=5)
    policy = build_policy(checkpoints["qwen2_tied"], optim=optim)
    seen = [float(policy.train_step(micro_batches(), loss_fn)["lr"]) for _ in range(3)]
    assert seen == pytest.approx([optim.lr_at(s) for s in range(3)])
    assert policy.trainer.optimizer().param_groups[0]["lr"] == pytest.approx(optim.lr_at(2))
    saved = policy.state_dict()
    resumed = build_policy(checkpoints["qwen2_tied"], optim=optim)
    resumed.load_state_dict(saved)
    assert float(resumed.train_step(micro_batches(), loss_fn)["lr"]) == pytest.approx(optim.lr_at(3))


def test_bf16_parameters_train_through_fp32_master_weights(checkpoints):
    from r1core.models import build_policy

    policy = build_policy(checkpoints["qwen2_tied"], dtype=torch.bfloat16, optim=OptimConfig(lr=1e-3))
    params = policy.trainer.parameters()
    # Linear weights are bf16 (Megatron's torch norms keep their weights in fp32).
    assert sum(p.dtype == torch.bfloat16 for p in params) > len(params) // 2
    metrics = policy.train_step(micro_batches(), loss_fn)
    assert math.isfinite(float(metrics["grad_norm"])) and float(metrics["grad_norm"]) > 0
    masters = policy.trainer._masters
    optimizer = policy.trainer.optimizer()
    assert masters is not None and all(m.dtype == torch.float32 for m in masters)
    state = optimizer.state[masters[0]]
    assert state["exp_avg"].dtype == torch.float32 and state["exp_avg_sq"].dtype == torch.float32
    # The gradient of the two micro-batches was summed in fp32 and the model holds the
    # masters rounded to bf16; the masters carry what bf16 cannot (an lr-1e-3 update).
    assert all(m.grad is not None and m.grad.dtype == torch.float32 for m in masters)
    assert all(torch.equal(p, m.to(p.dtype)) for p, m in zip(params, masters))
    assert any(not torch.equal(m, m.to(torch.bfloat16).float()) for m in masters)
    # A checkpoint restores the exact fp32 masters, not their bf16 rounding.
    saved = policy.state_dict()
    policy.train_step(micro_batches(), loss_fn)
    expected = policy.logprobs(token_block(0))
    resumed = build_policy(checkpoints["qwen2_tied"], dtype=torch.bfloat16, optim=OptimConfig(lr=1e-3))
    resumed.load_state_dict(saved)
    assert all(torch.equal(a, b) for a, b in zip(resumed.trainer._masters, [t for t in saved["optimizer"]["master_weights"]]))
    resumed.train_step(micro_batches(), loss_fn)
    assert torch.equal(resumed.logprobs(token_block(0)), expected)


def test_fp32_parameters_have_no_master_copy(checkpoints):
    from r1core.models import build_policy

    policy = build_policy(checkpoints["qwen2_tied"], optim=OptimConfig(lr=1e-3))
    policy.train_step(micro_batches(), loss_fn)
    assert policy.trainer._masters is None
    assert policy.trainer.optimizer().param_groups[0]["params"][0] is policy.trainer.parameters()[0]


def test_activation_recomputation_reaches_megatron_and_is_refused_without_cuda(checkpoints):
    from r1core.commands.sft import check_recompute
    from r1core.config import ConfigError
    from r1core.models import build_policy

    policy = build_policy(checkpoints["qwen2"], recompute=True)
    config = policy.model.config
    assert (config.recompute_granularity, config.recompute_method, config.recompute_num_layers) == ("full", "uniform", 1)
    check_recompute(False)
    if not torch.cuda.is_available():
        # Megatron-Core's checkpointing saves the CUDA RNG state: the commands refuse it up front.
        with pytest.raises(ConfigError, match="policy.recompute=true needs CUDA"):
            check_recompute(True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="activation recomputation runs on CUDA only")
def test_activation_recomputation_gives_the_same_step(checkpoints):
    from r1core.models import build_policy

    plain = build_policy(checkpoints["qwen2"], optim=OptimConfig(lr=1e-3, clip_grad=0.0))
    recomputed = build_policy(checkpoints["qwen2"], optim=OptimConfig(lr=1e-3, clip_grad=0.0), recompute=True)
    first = plain.train_step(micro_batches(), loss_fn)
    second = recomputed.train_step(micro_batches(), loss_fn)
    torch.testing.assert_close(second["loss"], first["loss"])
    torch.testing.assert_close(second["grad_norm"], first["grad_norm"], rtol=1e-5, atol=1e-6)
