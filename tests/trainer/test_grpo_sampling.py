"""The GRPO step's sampling phase through GRPOTrainer: rewards, every sampling strategy of the
algorithm section (overlong shaping and filter, dynamic sampling, difficulty filter,
curriculum, length schedule), and the token layout of the micro-batches. The engine here is
a scripted stand-in that returns fixed samples, so each expectation can be computed by hand;
the real vLLM engine, policy and rewards run in test_train_pipeline.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from r1core.algos import AlgorithmConfig
from r1core.algos.sampling import DifficultyConfig, DifficultyFilter, DynamicSamplingConfig, OverlongConfig, PromptStream
from r1core.batch import Prompt, rl_micro_batches
from r1core.trainer.grpo import GRPOConfig, GRPOTrainer


@dataclass
class Sample:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    weight_version: str = "0"
    routes: object = None


class ScriptedRollout:
    """Prompt ``[k, ...]`` answers with ``n`` samples; sample ``j`` is ``j + 1`` tokens long (at
    most ``max_tokens``) and hits the length limit when it reaches ``max_tokens``."""

    def __init__(self):
        self.budgets = []

    def generate(self, prompts, *, n, max_tokens, temperature, top_p=1.0, seed=None):
        self.budgets.append(max_tokens)
        lengths = [min(j + 1, max_tokens) for j in range(n)]
        return [
            [Sample([p[0]] * m, [-0.5] * m, "length" if m >= max_tokens else "stop") for m in lengths]
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


# The embedded run's algorithm: DAPO's loss with its sampling strategies off.
PLAIN = AlgorithmConfig.from_preset("dapo", dynamic_sampling=DynamicSamplingConfig(), overlong=OverlongConfig())


def make_trainer(prompts, algorithm=PLAIN, stream=None, **config):
    cfg = GRPOConfig(**{"samples_per_prompt": 4, "max_response_tokens": 4, **config})
    return GRPOTrainer(
        cfg, algorithm, policy=None, rollout=ScriptedRollout(), prompts=stream or Stream(prompts),
        decode=lambda ids: "x" * len(ids), score=score_by_length,
    )


def test_overlong_shaping_and_filtering_follow_dapo():
    algorithm = replace(PLAIN, overlong=OverlongConfig(buffer_fraction=0.5, filter=True))
    trainer = make_trainer([Prompt([7, 1], "2", 0)], algorithm, prompts_per_step=1)
    batch, _ = trainer._sample(0, budget=4)
    # lengths 1..4 with max 4 and a buffer of 2: penalty 0, 0, -0.5, -1 on top of reward [0, 1, 0, 0]
    torch.testing.assert_close(batch.rewards, torch.tensor([0.0, 1.0, -0.5, -1.0]))
    torch.testing.assert_close(batch.scores, torch.tensor([0.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(batch.loss_weights, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert batch.truncated.tolist() == [False, False, False, True]


def test_dapo_preset_turns_on_all_of_dapo():
    dapo = AlgorithmConfig.from_preset("dapo")
    assert dapo.dynamic_sampling.enabled and dapo.overlong.buffer_fraction == 0.2
    assert (dapo.loss, dapo.clip_low, dapo.clip_high, dapo.kl_mode) == ("dapo", 0.2, 0.28, "off")
    trainer = make_trainer([Prompt([1], "9", 0), Prompt([2], "3", 1)], dapo, prompts_per_step=2, max_response_tokens=10)
    batch, metrics = trainer._sample(0, budget=10)
    # The all-zero group is dropped in both rounds; the refill draws prompt 1 again.
    assert batch.uids == [1, 1] and metrics["dynamic_sampling/groups_dropped"] == 2
    assert batch.scores is not None  # shaping kept the unshaped outcome


def test_dynamic_sampling_drops_equal_groups_and_refills():
    # Gold "9" is never matched (all rewards 0: no signal); gold "3" is matched once.
    prompts = [Prompt([1], "9", 0), Prompt([2], "3", 1), Prompt([3], "9", 2), Prompt([4], "2", 3)]
    algorithm = replace(PLAIN, dynamic_sampling=DynamicSamplingConfig(enabled=True, max_refill_rounds=3))
    trainer = make_trainer(prompts, algorithm, prompts_per_step=2)
    batch, metrics = trainer._sample(0, budget=4)
    assert len(batch) == 8 and batch.uids == [1, 3]  # two informative groups of 4
    assert metrics["dynamic_sampling/groups_dropped"] == 2 and metrics["dynamic_sampling/rounds"] == 2
    assert batch.group_index.tolist() == [1, 3]  # unique per generated group, across rounds
    assert trainer._advantages(batch, None).advantages.shape == (8, 4)


def test_difficulty_filter_and_curriculum_follow_the_pass_rates_the_trainer_measures():
    """The trainer feeds every step's groups to the stream's tracker; the next epoch drops
    always- and never-solved prompts and orders the rest easy to hard."""
    # Gold g: the response of g characters scores 1, so gold "9" never passes; "1".."4" pass
    # 1 in 4 (one response of each length 1..4).
    prompts = [Prompt([k], gold, k) for k, gold in enumerate(["9", "1", "2", "9", "3"])]
    difficulty = DifficultyConfig(filter=True, curriculum=True, pass_threshold=0.5)
    algorithm = replace(PLAIN, difficulty=difficulty)
    stream = PromptStream(prompts, seed=0, id_of=lambda p: p.uid, tracker=difficulty.tracker(),
                          difficulty_filter=DifficultyFilter(), curriculum=True)
    trainer = make_trainer(prompts, algorithm, stream=stream, prompts_per_step=5)
    trainer._sample(0, budget=4)  # epoch 0: every prompt once, pass rates measured
    assert stream.tracker.pass_rate(0) == 0.0 and stream.tracker.pass_rate(1) == 0.25
    batch, _ = trainer._sample(1, budget=4)  # epoch 1 starts: the never-solved "9"s are gone
    assert stream.last_epoch_filtered == 2 and set(batch.uids) <= {1, 2, 4}
    state = stream.state_dict()
    assert state["pass_rates"]["samples"][1] >= 8  # checkpointed with the data position


def test_length_schedule_sets_each_steps_budget():
    algorithm = replace(PLAIN, length_schedule="0:2,1:3")
    trainer = make_trainer([Prompt([1], "1", 0)], algorithm, prompts_per_step=1)
    assert [trainer.budgets(step) for step in (0, 1, 5)] == [2, 3, 3]
    batch, _ = trainer._sample(0, budget=trainer.budgets(0))
    assert batch.response_lengths.tolist() == [1, 2, 2, 2] and trainer.rollout.budgets == [2]
    with pytest.raises(ValueError, match="above trainer.max_response_tokens=4"):
        make_trainer([Prompt([1], "1", 0)], replace(PLAIN, length_schedule="0:8"), prompts_per_step=1)


def test_micro_batches_put_response_tokens_at_their_logprob_columns():
    trainer = make_trainer([Prompt([5, 6, 7], "2", 0)], prompts_per_step=1)
    batch, _ = trainer._sample(0, budget=4)
    batch = trainer._advantages(batch, None)
    (micro,) = rl_micro_batches(batch, range(len(batch)), micro_batch_size=8)
    # prompt of 3 tokens: response token j is predicted at column 2 + j of logp [B, T-1]
    assert micro.mask.shape == (4, 3 + 4 - 1)
    for row, length in enumerate(range(1, 5)):
        expected = torch.zeros(6)
        expected[2 : 2 + length] = 1.0
        torch.testing.assert_close(micro.mask[row], expected)
        torch.testing.assert_close(micro.rollout_logp[row], -0.5 * expected)
    assert [s.tolist() for s in micro.input_ids][1] == [5, 6, 7, 5, 5]


class RoutedRollout(ScriptedRollout):
    """A MoE engine: each sample carries the experts it routed to (here a tag of its row)."""

    def generate(self, prompts, **kwargs):
        groups = super().generate(prompts, **kwargs)
        for g, group in enumerate(groups):
            for j, sample in enumerate(group):
                sample.routes = torch.tensor([g, j])
        return groups

    def sync_weights(self, policy):
        pass


class RecordingPolicy:
    """Log-probs of 0; records the routes every forward was asked to replay."""

    def __init__(self):
        self.logprob_routes, self.train_routes = [], []

    def logprobs(self, input_ids, *, temperature=1.0, routes=None):
        self.logprob_routes.append(routes)
        width = max(len(ids) for ids in input_ids) - 1
        return torch.zeros(len(input_ids), width)

    def train_step(self, micro_batches, loss_fn, *, temperature=1.0, return_entropy=False):
        for micro in micro_batches:
            self.train_routes.append(micro.routes)
            logp = torch.zeros_like(micro.mask).requires_grad_()
            loss_fn(logp, None, micro)
        return {"loss": torch.zeros(()), "grad_norm": torch.zeros(())}


def test_rollout_routes_are_replayed_in_old_and_updated_logprobs():
    """R3: the experts the engine chose travel with each sample into the old-log-prob forward
    and the update, in the rows' order."""
    policy = RecordingPolicy()
    trainer = GRPOTrainer(GRPOConfig(prompts_per_step=2, samples_per_prompt=2, max_response_tokens=4, mini_batches=2),
                          PLAIN, policy=policy, rollout=RoutedRollout(),
                          prompts=Stream([Prompt([1], "1", 0), Prompt([2], "2", 1)]),
                          decode=lambda ids: "x" * len(ids), score=score_by_length)
    result = trainer.step()
    expected = [torch.tensor([g, j]) for g in range(2) for j in range(2)]
    (old,) = policy.logprob_routes  # mini_batches=2: the old log-probs are a forward of their own
    assert all(torch.equal(a, b) for a, b in zip(old, expected)) and len(old) == 4
    replayed = [r for micro in policy.train_routes for r in micro]
    assert sorted(tuple(r.tolist()) for r in replayed) == sorted(tuple(r.tolist()) for r in expected)
    assert result.batch.routes is not None
