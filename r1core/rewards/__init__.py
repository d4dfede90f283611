"""Verifiable rewards for R1-style RL.

Every reward is a batch function ``(responses: list[str], golds: list[str]) -> list[float]``,
registered by name (``get_reward(name, **config)``, ``list_rewards()``), composable as a
weighted sum that keeps its components (``compose_rewards``), and runnable in a pool of worker
processes with a per-sample timeout (``RewardPool``). Called directly, a registered reward is
bounded in time too (the process's default pool); it also accepts TRL's reward-function
convention, and ``r1core.rewards.adapters`` gives verl's ``compute_score``. Built-in rewards:

- ``math_accuracy``: final answer equals the gold (math-verify; ``pip install 'r1core[rewards]'``,
  imported on first use);
- ``r1_format``, ``r1_tag_count``: the ``<think>``/``<answer>`` layout; ``answer_marker``: a
  marked final answer (``\\boxed{}``, ``<answer>`` or ``####``), right or wrong;
- ``overlong_penalty`` (DAPO), ``length_penalty``;
- ``language_consistency``: share of the chain of thought in the target language;
- ``code_execution``: the response's program against JSON test cases, in a sandbox isolated
  from the machine (``r1core.rewards.sandbox``; ``python -m r1core.rewards sandbox-status``).
"""

from r1core.rewards.registry import (
    REWARDS,
    BoundReward,
    CompositeReward,
    RewardComponent,
    RewardFn,
    RewardSpec,
    compose_rewards,
    get_reward,
    get_reward_spec,
    list_rewards,
    register_reward,
    scoring_in_process,
)
from r1core.rewards.code import CodeExecutionConfig, code_execution, make_code_gold
from r1core.rewards.format import AnswerMarkerConfig, R1FormatConfig, answer_marker, r1_format, r1_tag_count
from r1core.rewards.language import LanguageConsistencyConfig, language_consistency
from r1core.rewards.length import (
    LengthPenaltyConfig,
    OverlongPenaltyConfig,
    length_penalty,
    overlong_penalty,
)
from r1core.rewards.math import MathAccuracyConfig, math_accuracy
from r1core.rewards.pool import (
    CompositeResult,
    PoolResult,
    RewardPool,
    RewardPoolConfig,
    RewardPoolError,
    default_pool,
    set_default_pool_config,
)
from r1core.rewards.sandbox import SandboxConfig, SandboxError, SandboxResult, isolation_plan, run_program
from r1core.rewards.adapters import compute_score, trl_reward, verl_compute_score  # after the rewards register

__all__ = [
    "REWARDS",
    "AnswerMarkerConfig",
    "BoundReward",
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
    "SandboxError",
    "SandboxResult",
    "answer_marker",
    "code_execution",
    "compose_rewards",
    "compute_score",
    "default_pool",
    "get_reward",
    "get_reward_spec",
    "isolation_plan",
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
    "scoring_in_process",
    "set_default_pool_config",
    "trl_reward",
    "verl_compute_score",
]
