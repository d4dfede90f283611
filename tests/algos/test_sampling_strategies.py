"""Sampling strategies over a RolloutBatch: dynamic sampling, overlong shaping/filtering,
difficulty, curriculum, length schedule. All pure functions of their inputs (and a seed);
tests/trainer/test_grpo_sampling.py runs each of them through GRPOTrainer."""

import pytest
import torch
from batches import rollout_batch

from r1core.algos.sampling import (
    DifficultyConfig,
    DifficultyFilter,
    DynamicSampling,
    DynamicSamplingConfig,
    LengthSchedule,
    OverlongConfig,
    OverlongFilter,
    OverlongRewardShaping,
    PassRateTracker,
    curriculum_order,
    informative_groups,
    overlong_penalty,
)
from r1core.batch import RolloutBatch


def test_rollout_batch_take_concat_and_validation():
    batch = rollout_batch([[1, 0], [1, 1], [0, 0]], uids=["a", "b", "c"])
    picked = batch.take_groups([2, 0])
    assert picked.uids == ["c", "a"] and picked.golds == ["c", "a"] and picked.group_index.tolist() == [2, 0]
    assert picked.groups().rewards.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert picked.response_tokens == [[2] * 10, [2] * 10, [0] * 10, [0] * 10]
    joined = RolloutBatch.concat([picked, batch.take_groups([1])])
    assert joined.uids == ["c", "a", "b"] and joined.num_groups == 3 and len(joined) == 6
    with pytest.raises(ValueError, match="uids has 2 entries for 1 groups"):
        RolloutBatch(2, [[1]], ["a", "b"], ["1"], torch.zeros(1), [[1], [1]], [torch.zeros(1)] * 2,
                     torch.zeros(2), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="rewards has 3 rows for 1 groups of 2"):
        RolloutBatch(2, [[1]], ["a"], ["1"], torch.zeros(1), [[1], [1]], [torch.zeros(1)] * 2,
                     torch.zeros(3), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="group sizes"):
        RolloutBatch.concat([batch, rollout_batch([[1, 0, 1]])])


def test_informative_groups():
    batch = rollout_batch([[1, 1, 1], [1, 0, 1], [0, 0, 0], [0.5, 0.5, 0.4]])
    assert informative_groups(batch).tolist() == [False, True, False, True]
    assert informative_groups(batch, min_spread=0.2).tolist() == [False, True, False, False]


class ListSource:
    """A source replaying prepared batches; records the rounds it was asked for."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.rounds = []

    def __call__(self, round_index):
        self.rounds.append(round_index)
        if self.batches:
            return self.batches.pop(0)
        return rollout_batch([[0, 0]]).take_groups([])


def test_dynamic_sampling_refills_until_target():
    first = rollout_batch([[1, 1], [1, 0], [0, 0]])
    refill_1 = rollout_batch([[0, 0], [0, 1]], first_group=3)
    refill_2 = rollout_batch([[1, 0], [1, 0], [1, 1]], first_group=5)
    source = ListSource([refill_1, refill_2])
    sampling = DynamicSampling(DynamicSamplingConfig(enabled=True, max_refill_rounds=5), target_num_groups=3)
    kept, stats = sampling.run(first, source)
    assert kept.uids == [1, 4, 5, 6]
    assert source.rounds == [1, 2]
    assert (stats.rounds, stats.num_dropped, stats.num_kept) == (3, 4, 4)
    assert sampling.truncate(kept).uids == [1, 4, 5]


def test_dynamic_sampling_respects_the_round_cap_and_a_global_count():
    first = rollout_batch([[1, 1], [0, 0]])
    source = ListSource([rollout_batch([[0, 0]], first_group=9)] * 10)
    sampling = DynamicSampling(DynamicSamplingConfig(enabled=True, max_refill_rounds=3), target_num_groups=2)
    kept, stats = sampling.run(first, source)
    assert kept.num_groups == 0 and stats.rounds == 4 and source.rounds == [1, 2, 3]
    assert stats.as_metrics()["dynamic_sampling/groups_dropped"] == 5.0
    # Replicas count together: one kept group here plus the others' reaches the target.
    kept, stats = sampling.run(rollout_batch([[1, 0]]), ListSource([]), total=lambda mine: mine + 1)
    assert kept.num_groups == 1 and stats.rounds == 1


def test_dynamic_sampling_filters_on_outcomes_not_shaped_rewards():
    rewards = [[0.8, 0.9], [1.0, 1.0]]
    scores = [[1.0, 1.0], [1.0, 0.0]]  # shaped rewards differ, outcomes do not
    first = rollout_batch(rewards, scores=scores)
    kept, stats = DynamicSampling(DynamicSamplingConfig(enabled=True), 4).run(first, ListSource([]))
    assert kept.uids == [1] and stats.num_dropped == 1


def test_overlong_penalty_hand_values():
    lengths = torch.tensor([10, 16, 17, 18, 20, 21])
    penalty = overlong_penalty(lengths, max_length=20, buffer_length=4, penalty=1.0)
    assert penalty.tolist() == pytest.approx([0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(lengths, max_length=20, buffer_length=0)


def test_overlong_shaping_and_filter():
    batch = rollout_batch([[1, 1, 0]], lengths=[[10, 18, 20]], truncated=[[False, False, True]])
    out = OverlongFilter()(OverlongRewardShaping(max_length=20, buffer_length=4, penalty=0.5)(batch))
    assert out.rewards.tolist() == pytest.approx([1.0, 0.75, -0.5])
    assert out.scores.tolist() == [1.0, 1.0, 0.0]  # outcome kept for filtering
    assert out.loss_weights.tolist() == [1.0, 1.0, 0.0]
    assert batch.rewards.tolist() == [1.0, 1.0, 0.0]  # input untouched
    # The config form: a 20 % soft zone of a 20-token budget is the 4 tokens above.
    same = OverlongConfig(buffer_fraction=0.2, penalty=0.5, filter=True).apply(batch, max_length=20)
    assert torch.equal(same.rewards, out.rewards) and torch.equal(same.loss_weights, out.loss_weights)
    assert OverlongConfig().apply(batch, max_length=20) is batch


def test_pass_rate_tracker_mean_ema_and_state():
    tracker = PassRateTracker()
    tracker.update(rollout_batch([[1, 0, 1, 1], [0, 0, 0, 0]], uids=["x", "y"]))
    tracker.update(rollout_batch([[0, 0, 0, 0]], uids=["x"]))
    assert tracker.pass_rate("x") == pytest.approx(3 / 8)
    assert tracker.pass_rate("y") == 0.0 and tracker.pass_rate("z") is None
    restored = PassRateTracker()
    restored.load_state_dict(tracker.state_dict())
    assert restored.pass_rates() == tracker.pass_rates()
    ema = DifficultyConfig(pass_rate_decay=0.5).tracker()
    ema.update(rollout_batch([[1, 1]], uids=["x"]))
    ema.update(rollout_batch([[0, 0]], uids=["x"]))
    assert ema.pass_rate("x") == pytest.approx(0.5)
    ema.update(rollout_batch([[0, 0]], uids=["x"]))
    assert ema.pass_rate("x") == pytest.approx(0.25)


def test_difficulty_filter_band():
    rates = {"easy": 1.0, "never": 0.0, "mid": 0.5, "low": 0.1}
    ids = ["easy", "never", "mid", "low", "new"]
    assert DifficultyFilter().select(ids, rates) == ["mid", "low", "new"]
    band = DifficultyFilter(min_pass_rate=0.1, max_pass_rate=0.5, inclusive=True, keep_unmeasured=False)
    assert band.select(ids, rates) == ["mid", "low"]
    with pytest.raises(ValueError, match="min_pass_rate"):
        DifficultyFilter(min_pass_rate=0.8, max_pass_rate=0.2)
    with pytest.raises(ValueError, match="min_pass_rate"):
        DifficultyConfig(min_pass_rate=0.8, max_pass_rate=0.2)


def test_curriculum_order_is_easy_to_hard_and_seeded():
    ids = list(range(40))
    rates = {i: (i % 10) / 10 for i in ids}
    order = curriculum_order(ids, rates, seed=0, num_buckets=10)
    buckets = [int(rates[i] * 10) for i in order]
    assert buckets == sorted(buckets, reverse=True)
    assert curriculum_order(ids, rates, seed=0) == order
    assert curriculum_order(ids, rates, seed=1) != order
    assert sorted(order) == ids
    shuffled = curriculum_order(ids, rates, seed=0, num_buckets=1)
    assert sorted(shuffled) == ids and shuffled != ids


def test_length_schedule():
    schedule = LengthSchedule.parse("0:8192,100:16384,200:24576")
    assert [schedule(s) for s in (0, 99, 100, 199, 200, 10_000)] == [8192, 8192, 16384, 16384, 24576, 24576]
    assert schedule.final_length == 24576 and LengthSchedule.constant(64)(5) == 64
    with pytest.raises(ValueError, match="start at step 0"):
        LengthSchedule(((10, 8),))
    with pytest.raises(ValueError, match="must not decrease"):
        LengthSchedule(((0, 16), (5, 8)))
    with pytest.raises(ValueError, match="cannot parse"):
        LengthSchedule.parse("0-8192")


def test_prompt_stream_epochs_filtering_curriculum_and_resume():
    from r1core.algos.sampling import PromptStream
    from r1core.data import Problem

    problems = [Problem(f"p{i}", f"q{i}", "1") for i in range(10)]
    stream = PromptStream(problems, seed=3)
    first = stream.next(7) + stream.next(3)
    assert sorted(p.id for p in first) == sorted(p.id for p in problems)  # one full epoch
    second = stream.next(10)
    assert [p.id for p in second] != [p.id for p in first] and stream.epoch == 1
    assert [p.id for p in PromptStream(problems, seed=3).next(10)] == [p.id for p in first]

    tracker = PassRateTracker()
    for i, problem in enumerate(problems):
        tracker.record(problem.id, num_passed=i % 5, num_samples=4)  # p4, p9 always solved (rate 1)
    filtered = PromptStream(problems, seed=0, tracker=tracker, difficulty_filter=DifficultyFilter(), curriculum=True)
    epoch = [p.id for p in filtered.next(8)]
    assert filtered.last_epoch_filtered == 4  # rate 0 (p0, p5) and rate 1 (p4, p9) dropped
    rates = [tracker.pass_rate(i) for i in epoch[:6]]
    assert rates == sorted(rates, reverse=True) and set(epoch[:6]) == {"p1", "p2", "p3", "p6", "p7", "p8"}

    resumed = PromptStream(problems, seed=3)
    reference = PromptStream(problems, seed=3)
    reference.next(4)
    resumed.load_state_dict(reference.state_dict())
    assert [p.id for p in resumed.next(9)] == [p.id for p in reference.next(9)]
    with pytest.raises(ValueError, match="need a PassRateTracker"):
        PromptStream(problems, seed=0, curriculum=True)
