"""Micro-batches and data-parallel shares do not change what an optimiser step minimises.

``Policy.train_step`` minimises the mean of its micro-batch losses and data parallelism
averages the replicas' gradients. The trainers weight each micro-batch loss by its share of
the global batch (``global_loss_scales``), so a DAPO token-mean is over every token of the
step however the batch is cut. The policy here is a unigram model that honours
``train_step``'s contract, small enough that the gradients can be compared exactly.
"""

from __future__ import annotations

import pytest
import torch

from r1core.algos import AlgorithmConfig, LossConfig, LossInputs, compute_policy_loss
from r1core.algos.losses import resolve_config
from r1core.ops.grpo_loss import AGGREGATIONS, aggregation_denominator
from r1core.trainer.grpo import GRPOConfig
from r1core.trainer.sft import SFTConfig
from r1core.parallel import Topology
from r1core.trainer.distributed import global_loss_scales
from r1core.trainer.grpo import GRPOTrainer, Prompt
from r1core.trainer.sft import run_sft

from tests.trainer.test_grpo_sampling import ScriptedRollout, Stream, score_by_length


class UnigramPolicy:
    """log p(token) = log_softmax(weight)[token]; ``train_step`` keeps each step's gradient."""

    def __init__(self, vocab: int = 16) -> None:
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(vocab, generator=generator).requires_grad_()
        self.grads: list[torch.Tensor] = []

    def train_step(self, micro_batches, loss_fn, *, temperature=1.0, return_entropy=False):
        self.weight.grad = None
        losses = []
        for mb in micro_batches:
            width = mb.mask.shape[1]
            table = torch.log_softmax(self.weight, 0)
            logp = torch.stack([torch.nn.functional.pad(table[ids[1:]], (0, width - len(ids) + 1))
                                for ids in mb.input_ids])
            loss, _ = loss_fn(logp, None, mb)
            (loss / len(micro_batches)).backward()
            losses.append(loss.detach())
        self.grads.append(self.weight.grad.clone())
        return {"loss": torch.stack(losses).mean(), "grad_norm": self.weight.grad.norm()}


class NoSync(ScriptedRollout):
    def sync_weights(self, policy):
        pass


def grpo_gradient(preset: str, micro_batch_size: int) -> tuple[torch.Tensor, float]:
    # Responses of 1..4 tokens in each group of 4: micro-batches of different token counts.
    prompts = [Prompt([1, 2], "2", 0), Prompt([3], "3", 1), Prompt([4, 5, 6], "1", 2)]
    policy = UnigramPolicy()
    trainer = GRPOTrainer(
        GRPOConfig(prompts_per_step=3, samples_per_prompt=4, max_response_tokens=4, micro_batch_size=micro_batch_size),
        # GRPO's KL needs a reference model; its aggregation is what is tested here.
        AlgorithmConfig.from_preset(preset, **({"kl_mode": "off", "kl_coef": 0.0} if preset == "grpo" else {})),
        policy=policy, rollout=NoSync(), prompts=Stream(prompts),
        decode=lambda ids: "x" * len(ids), score=score_by_length,
    )
    result = trainer.step()
    return policy.grads[0], result.metrics["loss"]


@pytest.mark.parametrize("preset", ["dapo", "grpo", "drgrpo"])
def test_grpo_update_does_not_depend_on_the_micro_batch_split(preset):
    whole, whole_loss = grpo_gradient(preset, micro_batch_size=12)
    for size in (1, 5):
        split, split_loss = grpo_gradient(preset, micro_batch_size=size)
        torch.testing.assert_close(split, whole, rtol=1e-6, atol=1e-7)
        assert split_loss == pytest.approx(whole_loss, rel=1e-6, abs=1e-7)
    assert whole.abs().sum() > 0  # the rewards differ within groups: there is a gradient


def test_sft_update_does_not_depend_on_the_micro_batch_split():
    examples = [([1, 2], [3]), ([4], [5, 6, 7, 8, 9]), ([2, 3, 4], [5, 6]), ([7], [8, 9, 10, 11, 12, 13, 14])]
    grads = []
    for micro in (4, 1, 3):
        policy = UnigramPolicy()
        run_sft(policy, examples, SFTConfig(epochs=1, batch_size=4, micro_batch_size=micro, seed=0))
        grads.append(policy.grads[0])
    for other in grads[1:]:
        torch.testing.assert_close(other, grads[0], rtol=1e-6, atol=1e-7)


class TwoReplicas(Topology):
    """A replica of a data-parallel pair whose all-reduce adds the other replica's value."""

    def __init__(self, other_total: float) -> None:
        super().__init__(dp_size=2)
        self.other_total = other_total

    def dp_all_reduce(self, value, op="sum"):
        assert op == "sum"
        return value + self.other_total


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_scaled_micro_losses_over_replicas_equal_the_global_batch_loss(aggregation):
    """Replica means of scaled micro-batch means = the loss of the whole batch at once."""
    generator = torch.Generator().manual_seed(3)
    rows, width = 10, 7
    lengths = torch.tensor([0, 1, 7, 3, 2, 7, 5, 1, 6, 4])  # an empty row and uneven micro-batches
    mask = (torch.arange(width)[None, :] < lengths[:, None]).float()
    logp = -torch.rand(rows, width, generator=generator)
    inputs = lambda r: LossInputs(  # noqa: E731
        logp[r], logp[r] + 0.1 * torch.randn(len(r), width, generator=generator.manual_seed(r[0])),
        torch.randn(len(r), generator=generator.manual_seed(100 + r[0])), mask[r],
    )
    config = resolve_config("grpo", LossConfig(aggregation=aggregation, norm_length=7.0))
    replicas = [[[0, 1, 2], [3]], [[4, 5, 6, 7], [8], [9]]]  # micro-batch rows of each replica
    denominators = [[aggregation_denominator(mask[r].sum(1), aggregation, 7.0) for r in micro] for micro in replicas]
    replica_losses = []
    for index, micro in enumerate(replicas):
        scales = global_loss_scales(denominators[index], TwoReplicas(sum(denominators[1 - index])))
        losses = [compute_policy_loss("grpo", inputs(r), config)[0] * s for r, s in zip(micro, scales)]
        replica_losses.append(torch.stack(losses).mean())
    # The whole batch in one piece, with the same per-row inputs.
    pieces = [inputs(r) for micro in replicas for r in micro]
    whole = LossInputs(*(torch.cat([getattr(p, name) for p in pieces])
                         for name in ("logp", "old_logp", "advantages", "mask")))
    expected = compute_policy_loss("grpo", whole, config)[0]
    torch.testing.assert_close(torch.stack(replica_losses).mean(), expected, rtol=1e-6, atol=1e-7)


def test_global_loss_scales_of_an_empty_batch_are_zero():
    assert global_loss_scales([0.0, 0.0], Topology()) == [0.0, 0.0]
    assert global_loss_scales([1.0, 3.0], Topology()) == [0.5, 1.5]
