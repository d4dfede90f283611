"""The GRPO step's sampling phase: rewards, overlong shaping/filtering, dynamic sampling, and
the token layout of the micro-batches. The engine here is a scripted stand-in that returns
fixed samples, so each expectation can be computed by hand; the real vLLM engine, policy and
rewards run in test_train_pipeline.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1core.algos import AlgorithmConfig
from r1core.trainer.config import GRPOConfig
from r1core.trainer.grpo import GRPOTrainer, Prompt
from r1core.trainer.samples import micro_batches


@dataclass
class Sample:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    weight_version: str = "0"


class ScriptedRollout:
    """Prompt ``[k, ...]`` answers with ``n`` samples; sample ``j`` is ``j + 1`` tokens long and
    hits the length limit when that equals ``max_tokens``."""

    def generate(self, prompts, *, n, max_tokens, temperature, top_p=1.0, seed=None):
        return [
            [Sample([p[0]] * (j + 1), [-0.5] * (j + 1), "length" if j + 1 >= max_tokens else "stop") for j in range(n)]
            for p in prompts
        ]


class Stream:
    def __init__(self, prompts):
        self.prompts, self.position = prompts, 0

    def next(self, count):
        out = [self.prompts[(self.position + i) % len(self.prompts)] for i in range(count)]
        self.position += count
        return out

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def score_by_length(responses, golds):
    """Reward 1 for responses of the gold's length (in characters), else 0."""
    totals = [float(len(r) == int(g)) for r, g in zip(responses, golds)]
    return totals, {"exact_length": totals}, 0


def make_trainer(prompts, **config):
    cfg = GRPOConfig(samples_per_prompt=4, max_response_tokens=4, **config)
    return GRPOTrainer(
        cfg, AlgorithmConfig.preset("dapo"), policy=None, rollout=ScriptedRollout(), prompts=Stream(prompts),
        decode=lambda ids: "x" * len(ids), score=score_by_length,
    )


def test_overlong_shaping_and_filtering_follow_dapo():
    trainer = make_trainer([Prompt([7, 1], "2", 0)], prompts_per_step=1, overlong_buffer=2, overlong_filter=True)
    batch, _ = trainer._sample(0)
    # lengths 1..4 with max 4 and a buffer of 2: penalty 0, 0, -0.5, -1 on top of reward [0, 1, 0, 0]
    torch.testing.assert_close(batch.rewards, torch.tensor([0.0, 1.0, -0.5, -1.0]))
    torch.testing.assert_close(batch.loss_weights, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert batch.truncated.tolist() == [False, False, False, True]


def test_dynamic_sampling_drops_equal_groups_and_refills():
    # Gold "9" is never matched (all rewards 0: no signal); gold "3" is matched once.
    prompts = [Prompt([1], "9", 0), Prompt([2], "3", 1), Prompt([3], "9", 2), Prompt([4], "2", 3)]
    trainer = make_trainer(prompts, prompts_per_step=2, dynamic_sampling=True, max_refill_tries=3)
    batch, metrics = trainer._sample(0)
    assert len(batch) == 8  # two informative groups of 4
    assert sorted({ids[0] for ids in batch.prompt_ids}) == [2, 4]
    assert metrics["groups_dropped"] == 2 and metrics["sampling_tries"] == 2
    assert batch.advantages.shape == (8, 4)
    assert set(batch.group_ids.tolist()) == {1, 3}  # unique per generated group, across tries


def test_micro_batches_put_response_tokens_at_their_logprob_columns():
    trainer = make_trainer([Prompt([5, 6, 7], "2", 0)], prompts_per_step=1)
    batch, _ = trainer._sample(0)
    (micro,) = micro_batches(batch, micro_batch_size=8)
    # prompt of 3 tokens: response token j is predicted at column 2 + j of logp [B, T-1]
    assert micro.mask.shape == (4, 3 + 4 - 1)
    for row, length in enumerate(range(1, 5)):
        expected = torch.zeros(6)
        expected[2 : 2 + length] = 1.0
        torch.testing.assert_close(micro.mask[row], expected)
        torch.testing.assert_close(micro.rollout_logp[row], -0.5 * expected)
    assert [s.tolist() for s in micro.input_ids][1] == [5, 6, 7, 5, 5]
