"""Reward registry and weighted composition."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest

from r1core.rewards import (
    CompositeReward,
    RewardComponent,
    compose_rewards,
    get_reward,
    get_reward_spec,
    list_rewards,
    register_reward,
)

BUILTIN = {"math_accuracy", "r1_format", "r1_tag_count", "answer_marker", "overlong_penalty", "length_penalty",
           "language_consistency", "code_execution"}


def test_builtins_registered():
    assert BUILTIN <= set(list_rewards())
    for name in BUILTIN:
        spec = get_reward_spec(name)
        assert spec.name == name and callable(spec.fn)


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError, match="unknown reward 'math_acuracy'; valid: .*math_accuracy.*r1_format"):
        get_reward("math_acuracy")


def test_unknown_config_field_lists_valid_fields():
    with pytest.raises(TypeError, match=r"unknown config field\(s\) \['max_len'\]; valid fields: .*max_length"):
        get_reward("overlong_penalty", max_len=10)
    with pytest.raises(TypeError, match="takes no config"):
        get_reward("r1_tag_count", weight=2)


@dataclass(frozen=True)
class _ScaleConfig:
    factor: float = 1.0


def test_register_custom_reward_with_config_and_pickling():
    @register_reward("test_scaled_length", config=_ScaleConfig)
    def scaled_length(responses, golds, config=_ScaleConfig()):
        return [config.factor * len(response) for response in responses]

    reward = get_reward("test_scaled_length", factor=0.5)
    assert reward(["ab", "abcd"], ["", ""]) == [1.0, 2.0]
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_scaled_length")(lambda responses, golds: [])
    with pytest.raises(TypeError, match="dataclass"):
        register_reward("test_bad_config", config=dict)
    # Built-in rewards with bound configs pickle (they travel to pool workers).
    bound = pickle.loads(pickle.dumps(get_reward("overlong_penalty", max_length=10, buffer=5)))
    assert bound(["a" * 10], [""]) == [-1.0]


def test_composite_weighted_sum_and_components():
    composite = compose_rewards(
        {"r1_format": 1.0, "overlong_penalty": 0.5},
        configs={"overlong_penalty": {"max_length": 40, "buffer": 10}},
    )
    good = "<think>a</think><answer>b</answer>"  # 34 chars: inside the buffer, -0.4
    totals, parts = composite.score([good, "x" * 50], ["", ""])
    assert parts["r1_format"] == [1.0, 0.0]
    assert parts["overlong_penalty"] == pytest.approx([-0.4, -1.0])
    assert totals == pytest.approx([1.0 - 0.2, -0.5])
    assert composite([good], [""]) == pytest.approx([0.8])


def test_composite_errors():
    with pytest.raises(ValueError, match="not in the weights"):
        compose_rewards({"r1_format": 1.0}, configs={"math_accuracy": {}})
    with pytest.raises(ValueError, match="at least one"):
        CompositeReward([])
    reward = get_reward("r1_format")
    with pytest.raises(ValueError, match="unique"):
        CompositeReward([RewardComponent("a", 1.0, reward), RewardComponent("a", 2.0, reward)])
    with pytest.raises(ValueError, match="differ in length"):
        compose_rewards({"r1_format": 1.0}).score(["a", "b"], ["a"])
