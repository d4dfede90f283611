"""Verifiable rewards for R1-style RL.

Every reward is a batch function ``(responses: list[str], golds: list[str]) -> list[float]``,
registered by name (``get_reward(name, **config)``, ``list_rewards()``), composable as a
weighted sum that keeps its components (``compose_rewards``), and runnable in a pool of worker
processes with a per-sample timeout (``RewardPool``). Built-in rewards:

- ``math_accuracy``: final answer equals the gold (math-verify; ``pip install 'r1core[rewards]'``,
  imported on first use);
- ``r1_format``, ``r1_tag_count``: the ``<think>``/``<answer>`` layout;
- ``overlong_penalty`` (DAPO), ``length_penalty``;
- ``language_consistency``: share of the chain of thought in the target language;
- ``code_execution``: the response's program against JSON test cases, sandboxed.
"""

from r1core.rewards.registry import (
    REWARDS,
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
from r1core.rewards.code import CodeExecutionConfig, code_execution, make_code_gold
from r1core.rewards.format import R1FormatConfig, r1_format, r1_tag_count
from r1core.rewards.language import LanguageConsistencyConfig, language_consistency
from r1core.rewards.length import (
    LengthPenaltyConfig,
    OverlongPenaltyConfig,
    length_penalty,
    overlong_penalty,
)
from r1core.rewards.math import MathAccuracyConfig, math_accuracy
from r1core.rewards.pool import CompositeResult, PoolResult, RewardPool, RewardPoolConfig, RewardPoolError
from r1core.rewards.sandbox import SandboxConfig, SandboxResult, run_program

__all__ = [
    "REWARDS",
    "CodeExecutionConfig",
    "CompositeResult",
    "CompositeReward",
    "LanguageConsistencyConfig",
    "LengthPenaltyConfig",
    "MathAccuracyConfig",
    "OverlongPenaltyConfig",
    "PoolResult",
    "R1FormatConfig",
    "RewardComponent",
    "RewardFn",
    "RewardPool",
    "RewardPoolConfig",
    "RewardPoolError",
    "RewardSpec",
    "SandboxConfig",
    "SandboxResult",
    "code_execution",
    "compose_rewards",
    "get_reward",
    "get_reward_spec",
    "list_rewards",
    "language_consistency",
    "length_penalty",
    "make_code_gold",
    "math_accuracy",
    "overlong_penalty",
    "r1_format",
    "r1_tag_count",
    "register_reward",
    "run_program",
]
