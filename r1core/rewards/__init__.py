"""Verifiable rewards for R1-style RL.

Every reward is a batch function ``(responses: list[str], golds: list[str]) -> list[float]``,
registered by name (``get_reward(name, **config)``), composable as a weighted sum that keeps
its components (``compose_rewards``), and runnable in a pool of worker processes with a
per-sample timeout (``RewardPool``). Only ``math_accuracy`` needs an extra (math-verify,
``pip install 'r1core[rewards]'``), imported on first use.
"""

from r1core.rewards.registry import (
    CompositeReward,
    RewardComponent,
    RewardFn,
    RewardSpec,
    compose_rewards,
    get_reward,
    get_reward_spec,
    list_rewards,
    register_reward,
)
from r1core.rewards.math import MathAccuracyConfig, math_accuracy

__all__ = [
    "CompositeReward",
    "MathAccuracyConfig",
    "RewardComponent",
    "RewardFn",
    "RewardSpec",
    "compose_rewards",
    "get_reward",
    "get_reward_spec",
    "list_rewards",
    "math_accuracy",
    "register_reward",
]
