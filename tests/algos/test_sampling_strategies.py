"""Sampling strategies: dynamic sampling, overlong shaping/filtering, difficulty, curriculum,
length schedule. All pure functions of their inputs (and a seed)."""

import pytest
import torch

from r1core.algos.sampling import (
    Compose,
    DifficultyFilter,
    DynamicSampling,
    DynamicSamplingConfig,
    GroupBatch,
    LengthSchedule,
    OverlongFilter,
    OverlongRewardShaping,
    PassRateTracker,
    curriculum_order,
    informative_groups,
    overlong_penalty,
)


def batch_from(rows, ids=None, lengths=None, truncated=None):
    rewards = torch.tensor(rows, dtype=torch.float32)
    ids = ids if ids is not None else list(range(len(rows)))
    lengths = torch.tensor(lengths) if lengths is not None else torch.full(rewards.shape, 10)
    truncated = torch.tensor(truncated) if truncated is not None else torch.zeros(rewards.shape, dtype=torch.bool)
    return GroupBatch(ids, rewards, lengths, truncated, extras={"text": [f"p{i}" for i in ids]})


def test_group_batch_take_concat_and_validation():
    batch = batch_from([[1, 0], [1, 1], [0, 0]], ids=["a", "b", "c"])
    picked = batch.take([2, 0])
    assert picked.prompt_ids == ["c", "a"] and picked.extras["text"] == ["pc", "pa"]
    assert torch.equal(picked.rewards, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    joined = GroupBatch.concat([picked, batch.take([1])])
    assert joined.prompt_ids == ["c", "a", "b"] and joined.num_groups == 3 and joined.group_size == 2
    with pytest.raises(ValueError, match="prompt_ids"):
        GroupBatch(["a"], torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="lengths must have rewards' shape"):
        GroupBatch(["a"], torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="different group sizes"):
        GroupBatch.concat([batch, batch_from([[1, 0, 1]])])


def test_informative_groups():
    batch = batch_from([[1, 1, 1], [1, 0, 1], [0, 0, 0], [0.5, 0.5, 0.4]])
    assert informative_groups(batch).tolist() == [False, True, False, True]
    assert informative_groups(batch, min_spread=0.2).tolist() == [False, True, False, False]


class ListSource:
    """A prompt source replaying prepared batches; records the requests it got."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.requests = []

    def __call__(self, num_missing):
        self.requests.append(num_missing)
        if self.batches:
            return self.batches.pop(0)
        empty = torch.zeros(0, 2)
        return GroupBatch([], empty, empty.long(), empty.bool(), extras={"text": []})


def test_dynamic_sampling_refills_until_target_and_truncates_surplus():
    first = batch_from([[1, 1], [1, 0], [0, 0]], ids=[0, 1, 2])
    refill_1 = batch_from([[0, 0], [0, 1]], ids=[3, 4])
    refill_2 = batch_from([[1, 0], [1, 0], [1, 1]], ids=[5, 6, 7])
    source = ListSource([refill_1, refill_2])
    kept, stats = DynamicSampling(DynamicSamplingConfig(target_num_groups=3, max_tries=5)).run(first, source)
    assert kept.prompt_ids == [1, 4, 5]
    assert source.requests == [2, 1]
    assert (stats.num_tries, stats.num_generated, stats.num_dropped, stats.num_surplus) == (2, 8, 4, 1)
    assert stats.reached_target and not stats.exhausted
    assert kept.extras["text"] == ["p1", "p4", "p5"]


def test_dynamic_sampling_respects_the_try_cap():
    first = batch_from([[1, 1], [0, 0]])
    source = ListSource([batch_from([[0, 0]], ids=[9])] * 10)
    kept, stats = DynamicSampling(DynamicSamplingConfig(target_num_groups=2, max_tries=3)).run(first, source)
    assert kept.num_groups == 0 and stats.num_tries == 3 and not stats.reached_target
    assert len(source.requests) == 3
    assert stats.as_metrics()["dynamic_sampling/num_dropped"] == 5.0


def test_dynamic_sampling_stops_on_exhausted_source_and_filters_on_scores():
    rewards = torch.tensor([[0.8, 0.9], [1.0, 1.0]])
    scores = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # shaped rewards differ, outcomes do not
    first = GroupBatch([0, 1], rewards, torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.bool), scores=scores, extras={"text": ["a", "b"]})
    kept, stats = DynamicSampling(DynamicSamplingConfig(target_num_groups=4)).run(first, ListSource([]))
    assert kept.prompt_ids == [1] and stats.exhausted and stats.num_tries == 1


def test_overlong_penalty_hand_values():
    lengths = torch.tensor([10, 16, 17, 18, 20, 21])
    penalty = overlong_penalty(lengths, max_length=20, buffer_length=4, penalty=1.0)
    assert penalty.tolist() == pytest.approx([0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    with pytest.raises(ValueError, match="buffer_length"):
        overlong_penalty(lengths, max_length=20, buffer_length=0)


def test_overlong_shaping_and_filter_compose():
    batch = batch_from([[1, 1, 0]], lengths=[[10, 18, 20]], truncated=[[False, False, True]])
    pipeline = Compose([OverlongRewardShaping(max_length=20, buffer_length=4, penalty=0.5), OverlongFilter()])
    out = pipeline(batch)
    assert out.rewards.tolist() == [pytest.approx([1.0, 0.75, -0.5])]
    assert out.scores.tolist() == [[1.0, 1.0, 0.0]]  # outcome kept for filtering
    assert out.loss_weight.tolist() == [[1.0, 1.0, 0.0]]
    assert batch.rewards.tolist() == [[1.0, 1.0, 0.0]]  # input untouched


def test_pass_rate_tracker_mean_and_ema():
    tracker = PassRateTracker()
    tracker.update(batch_from([[1, 0, 1, 1], [0, 0, 0, 0]], ids=["x", "y"]))
    tracker.update(batch_from([[0, 0, 0, 0]], ids=["x"]))
    assert tracker.pass_rate("x") == pytest.approx(3 / 8)
    assert tracker.pass_rate("y") == 0.0 and tracker.pass_rate("z") is None
    ema = PassRateTracker(decay=0.5)
    ema.update(batch_from([[1, 1]], ids=["x"]))
    ema.update(batch_from([[0, 0]], ids=["x"]))
    assert ema.pass_rate("x") == pytest.approx(0.5)
    ema.update(batch_from([[0, 0]], ids=["x"]))
    assert ema.pass_rate("x") == pytest.approx(0.25)


def test_difficulty_filter_band():
    rates = {"easy": 1.0, "never": 0.0, "mid": 0.5, "low": 0.1}
    ids = ["easy", "never", "mid", "low", "new"]
    assert DifficultyFilter().select(ids, rates) == ["mid", "low", "new"]
    band = DifficultyFilter(min_pass_rate=0.1, max_pass_rate=0.5, inclusive=True, keep_unmeasured=False)
    assert band.select(ids, rates) == ["mid", "low"]
    batch = batch_from([[1, 1], [1, 0], [0, 0]], ids=["a", "b", "c"])
    assert DifficultyFilter()(batch).prompt_ids == ["b"]
    with pytest.raises(ValueError, match="min_pass_rate"):
        DifficultyFilter(min_pass_rate=0.8, max_pass_rate=0.2)


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
