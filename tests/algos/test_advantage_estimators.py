"""Advantage estimators: hand-computed cases, plain-loop references, r1core.ops agreement."""

import math

import pytest
import torch

from r1core.algos import (
    ADVANTAGE_ESTIMATORS,
    AdvantageConfig,
    AdvantageInputs,
    compute_advantages,
    get_advantage_estimator,
    kl_reward,
)
from r1core.ops import group_advantages_reference
from r1core.ops.group_advantages import dense_group_index

GROUP_ESTIMATORS = ["grpo", "drgrpo", "rloo", "gspo", "reinforce++-baseline"]


def full_mask(batch, length):
    return torch.ones(batch, length)


def test_registry_lists_all_estimators_and_rejects_unknown():
    assert set(ADVANTAGE_ESTIMATORS.names()) == {"grpo", "drgrpo", "rloo", "reinforce++", "reinforce++-baseline", "gspo"}
    with pytest.raises(KeyError, match="valid: drgrpo, grpo, gspo"):
        get_advantage_estimator("ppo-gae")


def test_grpo_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    out = compute_advantages("grpo", AdvantageInputs(rewards, full_mask(4, 3), group_size=4))
    # mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 1/sqrt(3), advantage 0.5 * sqrt(3).
    expected = 0.5 * math.sqrt(3.0)
    assert torch.allclose(out.advantages[:, 0], torch.tensor([expected, -expected, expected, -expected]), atol=1e-5)
    assert torch.equal(out.advantages, out.advantages[:, :1].expand(4, 3))
    assert not out.zero_variance.any()


def test_drgrpo_and_rloo_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 0.0])
    mask = full_mask(3, 2)
    dr = compute_advantages("drgrpo", AdvantageInputs(rewards, mask, group_size=3)).advantages[:, 0]
    assert torch.allclose(dr, torch.tensor([2 / 3, -1 / 3, -1 / 3]))
    rloo = compute_advantages("rloo", AdvantageInputs(rewards, mask, group_size=3)).advantages[:, 0]
    # r_i minus the mean of the two others: 1 - 0, 0 - 0.5, 0 - 0.5.
    assert torch.allclose(rloo, torch.tensor([1.0, -0.5, -0.5]))


@pytest.mark.parametrize("name", GROUP_ESTIMATORS)
def test_identical_rewards_give_zero_advantages_and_are_flagged(name):
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5])
    out = compute_advantages(name, AdvantageInputs(rewards, full_mask(9, 4), group_size=3))
    assert out.zero_variance.tolist() == [True] * 3 + [False] * 3 + [True] * 3
    assert torch.count_nonzero(out.advantages[:3]) == 0
    assert torch.count_nonzero(out.advantages[6:]) == 0
    assert torch.count_nonzero(out.advantages[3:6]) > 0


def loop_group_advantages(rewards, group_ids, mode, eps=1e-6):
    """Plain-Python specification of the sequence-level estimators."""
    result = []
    for i, r in enumerate(rewards):
        members = [rewards[j] for j in range(len(rewards)) if group_ids[j] == group_ids[i]]
        n = len(members)
        mean = sum(members) / n
        if n < 2 or max(members) == min(members):
            result.append(0.0)
            continue
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / (n - 1))
        if mode == "grpo":
            result.append((r - mean) / (std + eps))
        elif mode == "drgrpo":
            result.append(r - mean)
        else:
            others = [rewards[j] for j in range(len(rewards)) if group_ids[j] == group_ids[i] and j != i]
            result.append(r - sum(others) / len(others))
    return result


@pytest.mark.parametrize("name,mode", [("grpo", "grpo"), ("drgrpo", "drgrpo"), ("rloo", "rloo"), ("gspo", "grpo")])
def test_sequence_estimators_match_loops_on_ragged_noncontiguous_groups(name, mode):
    generator = torch.Generator().manual_seed(1)
    group_ids = torch.tensor([7, 3, 7, 3, 3, 9, 7, 11, 11, 9, 5])
    rewards = torch.randint(0, 3, (11,), generator=generator).float() / 2
    mask = (torch.rand(11, 5, generator=generator) > 0.3).float()
    out = compute_advantages(name, AdvantageInputs(rewards, mask, group_ids=group_ids))
    expected = torch.tensor(loop_group_advantages(rewards.tolist(), group_ids.tolist(), mode))
    assert torch.allclose(out.advantages, expected[:, None] * mask, atol=1e-5)
    reference = group_advantages_reference(rewards, dense_group_index(group_ids), mode, 1e-6)
    assert torch.allclose(out.advantages[:, 0] * mask[:, 0], reference.advantages * mask[:, 0], atol=1e-6)
    assert torch.equal(out.zero_variance, reference.zero_variance)


def test_token_rewards_enter_the_sequence_score():
    rewards = torch.tensor([1.0, 1.0])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    token_rewards = torch.tensor([[-0.1, -0.2, -5.0], [-0.4, -9.0, -9.0]])  # padding must not count
    out = compute_advantages("drgrpo", AdvantageInputs(rewards, mask, group_size=2, token_rewards=token_rewards))
    # scores 0.7 and 0.6, mean 0.65.
    assert torch.allclose(out.advantages, torch.tensor([[0.05, 0.05, 0.0], [-0.05, 0.0, 0.0]]), atol=1e-6)


def loop_returns(token_rewards, mask, gamma):
    batch, length = len(mask), len(mask[0])
    returns = [[0.0] * length for _ in range(batch)]
    for b in range(batch):
        running = 0.0
        for t in reversed(range(length)):
            if mask[b][t]:
                running = token_rewards[b][t] + gamma * running
                returns[b][t] = running
    return returns


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("baseline", [False, True])
def test_reinforce_plus_plus_matches_loop(gamma, baseline):
    generator = torch.Generator().manual_seed(3)
    batch, length, group = 8, 6, 4
    lengths = [6, 3, 5, 1, 6, 2, 4, 6]
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(length)] for n in lengths])
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    token_rewards = -0.05 * torch.rand(batch, length, generator=generator)
    outcome = rewards.tolist()
    if baseline:
        outcome = [r - sum(outcome[(i // group) * group : (i // group + 1) * group]) / group for i, r in enumerate(outcome)]
    per_token = [[0.0] * length for _ in range(batch)]
    for b in range(batch):
        for t in range(length):
            if mask[b, t]:
                per_token[b][t] = token_rewards[b, t].item() + (outcome[b] if t == lengths[b] - 1 else 0.0)
    returns = loop_returns(per_token, mask.tolist(), gamma)
    valid = [returns[b][t] for b in range(batch) for t in range(length) if mask[b, t]]
    mean = sum(valid) / len(valid)
    std = math.sqrt(sum((v - mean) ** 2 for v in valid) / (len(valid) - 1))
    center = 0.0 if baseline else mean
    expected = torch.tensor([[(returns[b][t] - center) / (std + 1e-6) * mask[b, t].item() for t in range(length)] for b in range(batch)])
    name = "reinforce++-baseline" if baseline else "reinforce++"
    out = compute_advantages(
        name, AdvantageInputs(rewards, mask, group_size=group, token_rewards=token_rewards), AdvantageConfig(gamma=gamma)
    )
    assert torch.allclose(out.advantages, expected, atol=1e-5)
    assert torch.allclose(out.returns, torch.tensor(returns), atol=1e-6)


def test_reinforce_plus_plus_runs_without_groups():
    rewards = torch.tensor([1.0, 0.0, 1.0])
    out = compute_advantages("reinforce++", AdvantageInputs(rewards, full_mask(3, 2)))
    assert not out.zero_variance.any()
    # Batch-whitened: zero mean over the response tokens.
    assert abs(out.advantages.sum().item()) < 1e-5


def test_kl_reward_is_negative_scaled_kl_on_the_mask():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    mask = torch.tensor([[1.0, 0.0]])
    token_rewards = kl_reward(logp, ref, mask, coef=0.1, estimator="k1")
    assert torch.allclose(token_rewards, torch.tensor([[-0.05, 0.0]]))


def test_group_estimators_need_groups_and_validate_shapes():
    rewards, mask = torch.zeros(4), full_mask(4, 2)
    with pytest.raises(ValueError, match="needs groups"):
        compute_advantages("grpo", AdvantageInputs(rewards, mask))
    with pytest.raises(ValueError, match=r"response_mask must be \[B, T\]"):
        compute_advantages("grpo", AdvantageInputs(rewards, full_mask(3, 2), group_size=2))
    with pytest.raises(ValueError, match="token_rewards"):
        compute_advantages("grpo", AdvantageInputs(rewards, mask, group_size=2, token_rewards=torch.zeros(4, 3)))
    with pytest.raises(ValueError, match="gamma"):
        AdvantageConfig(gamma=1.5)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=2, max_size=6), min_size=1, max_size=6))
def test_grpo_groups_are_standardised_or_zero(groups):
    rewards = torch.tensor([r for g in groups for r in g])
    group_ids = torch.tensor([i for i, g in enumerate(groups) for _ in g])
    out = compute_advantages("grpo", AdvantageInputs(rewards, full_mask(len(rewards), 1), group_ids=group_ids))
    for i, g in enumerate(groups):
        adv = out.advantages[group_ids == i, 0].double()
        if len(set(g)) == 1:
            assert torch.all(adv == 0) and out.zero_variance[group_ids == i].all()
        else:
            assert abs(adv.mean().item()) < 1e-5 and adv.std().item() == pytest.approx(1.0, abs=1e-4)
