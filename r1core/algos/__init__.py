"""The RL algorithm family: advantage estimators, policy losses and sampling strategies.

    from r1core.algos import AlgorithmConfig, compute_advantages, compute_policy_loss

    algo = AlgorithmConfig.from_preset("dapo")
    adv = compute_advantages(algo.estimator, AdvantageInputs(rewards, mask, group_size=8),
                             algo.advantage_config())
    loss, metrics = compute_policy_loss(algo.loss, LossInputs(logp, old_logp, adv.advantages, mask),
                                        algo.loss_config())

Estimators and losses live in registries (``register_advantage_estimator``,
``register_policy_loss``) with one signature each; the numerics run on :mod:`r1core.ops`.
"""

from r1core.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageConfig,
    AdvantageEstimator,
    AdvantageInputs,
    AdvantageOutput,
    compute_advantages,
    get_advantage_estimator,
    register_advantage_estimator,
)
from r1core.algos.config import PRESETS, AlgorithmConfig
from r1core.algos.kl import KL_MODES, kl_estimate, kl_reward
from r1core.algos.losses import (
    LOSS_DEFAULTS,
    POLICY_LOSSES,
    LossConfig,
    LossInputs,
    PolicyLoss,
    compute_policy_loss,
    get_policy_loss,
    ops_loss_kwargs,
    register_policy_loss,
)
from r1core.algos.registry import Registry

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_MODES",
    "LOSS_DEFAULTS",
    "POLICY_LOSSES",
    "PRESETS",
    "AdvantageConfig",
    "AdvantageEstimator",
    "AdvantageInputs",
    "AdvantageOutput",
    "AlgorithmConfig",
    "LossConfig",
    "LossInputs",
    "PolicyLoss",
    "Registry",
    "compute_advantages",
    "compute_policy_loss",
    "get_advantage_estimator",
    "get_policy_loss",
    "kl_estimate",
    "kl_reward",
    "ops_loss_kwargs",
    "register_advantage_estimator",
    "register_policy_loss",
]
