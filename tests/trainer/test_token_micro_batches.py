"""Micro-batches by token budget: an even split of uneven samples that leaves the update as
it is (each micro-batch's loss is weighted by its share of the step's tokens)."""

from __future__ import annotations

import pytest
import torch

from batches import rollout_batch

from r1core.batch import micro_batch_chunks, rl_micro_batches


def test_chunks_by_samples_and_tokens():
    lengths = [5, 5, 5, 20, 3, 3]
    assert micro_batch_chunks(lengths, 4) == [[0, 1, 2, 3], [4, 5]]
    assert micro_batch_chunks(lengths, 4, 12) == [[0, 1], [2], [3], [4, 5]]  # 20 > 12 gets its own
    assert micro_batch_chunks(lengths, 1, 100) == [[i] for i in range(6)]
    assert micro_batch_chunks([], 4, 10) == []
    with pytest.raises(ValueError, match="max_samples"):
        micro_batch_chunks(lengths, 0)


def test_rl_micro_batches_by_tokens_partition_the_rows():
    batch = rollout_batch([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]], lengths=[[2, 9, 4], [9, 9, 1]])
    batch = batch.with_fields(advantages=torch.arange(6.0)[:, None].expand(6, 9).clone())
    rows = [5, 0, 1, 2, 3, 4]
    whole = rl_micro_batches(batch, rows, 16)
    split = rl_micro_batches(batch, rows, 16, max_tokens=12)
    # Sequences of 2, 3, 10, 5, 10, 10 tokens (one-token prompts).
    assert len(whole) == 1 and [m.num_samples for m in split] == [2, 1, 1, 1, 1]
    assert all(sum(len(ids) for ids in m.input_ids) <= 12 or m.num_samples == 1 for m in split)
    # The same samples in the same order with the same per-token values.
    assert torch.equal(torch.cat([ids for m in split for ids in m.input_ids]), torch.cat(whole[0].input_ids))
    for field in ("mask", "advantages"):
        values = [getattr(m, field)[i][getattr(m, "mask")[i] > 0] for m in split for i in range(m.num_samples)]
        reference = [getattr(whole[0], field)[i][whole[0].mask[i] > 0] for i in range(6)]
        assert all(torch.equal(a, b) for a, b in zip(values, reference)), field


def test_token_budget_leaves_the_update_unchanged(tmp_path):
    """Gradients of one step over the same samples, split by count or by tokens, agree."""
    pytest.importorskip("megatron.core")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1core.models import OptimConfig, build_policy
    from r1core.ops.grpo_loss import aggregation_denominator
    from r1core.parallel.topology import Topology
    from r1core.trainer.distributed import set_loss_scales

    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "m")
    batch = rollout_batch([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]], lengths=[[2, 9, 4], [9, 9, 1]])
    batch = batch.with_fields(advantages=torch.randn(6, 9))

    def loss_fn(logp, entropy, micro):
        token_sum = (logp * micro.advantages * micro.mask).sum()
        return -token_sum / micro.mask.sum() * micro.loss_scale, {}

    norms = []
    for max_tokens in (0, 12):
        policy = build_policy(tmp_path / "m", optim=OptimConfig(lr=1e-3, clip_grad=0.0))
        micro = rl_micro_batches(batch, range(6), 6, max_tokens=max_tokens)
        set_loss_scales(micro, [aggregation_denominator(m.mask.sum(1), "token-mean", None) for m in micro], Topology())
        norms.append(float(policy.train_step(micro, loss_fn)["grad_norm"]))
    assert norms[0] > 0 and norms[1] == pytest.approx(norms[0], rel=1e-5)
