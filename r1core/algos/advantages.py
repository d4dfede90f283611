"""Advantage estimators: one registry, one signature.

    AdvantageEstimator = Callable[[AdvantageInputs, AdvantageConfig], AdvantageOutput]

Registered names:

- ``grpo``: ``(r - mean_group) / (std_group + eps)`` (DeepSeekMath / R1).
- ``drgrpo``: ``r - mean_group`` (Dr. GRPO: no std normalisation; its other half, no
  length normalisation, is the ``drgrpo`` policy loss's aggregation).
- ``rloo``: ``r - mean of the other samples of the group`` (leave-one-out baseline).
- ``reinforce++``: discounted token returns whitened over the whole batch (the batch
  mean is the baseline; no groups needed).
- ``reinforce++-baseline``: the group mean is subtracted from each outcome first, then
  the returns are scaled by the batch std.
- ``gspo``: GRPO's sequence-level group-normalised advantage; GSPO differs from GRPO in
  its loss (sequence-level importance ratio), see :mod:`r1core.algos.losses`.

Sequence-level estimators use :func:`r1core.ops.group_advantages` (so they get its
kernels) on the sequence score ``reward + sum_t token_rewards`` and broadcast it over the
response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from r1core.algos.registry import Registry
from r1core.ops import group_advantages


@dataclass
class AdvantageInputs:
    """What every estimator receives.

    rewards: float ``[B]`` outcome reward of each response.
    response_mask: bool/float ``[B, T]``, 1 on response tokens (right padding allowed).
    group_size: responses per prompt when the groups are contiguous and equal-sized.
    group_ids: int ``[B]`` prompt id of each response (ragged groups). Group estimators
        need exactly one of ``group_size`` / ``group_ids``.
    token_rewards: optional float ``[B, T]`` per-token rewards added to the outcome, e.g.
        :func:`r1core.algos.kl.kl_reward` when the KL is applied in the reward.
    """

    rewards: torch.Tensor
    response_mask: torch.Tensor
    group_size: int | None = None
    group_ids: torch.Tensor | None = None
    token_rewards: torch.Tensor | None = None


@dataclass(frozen=True)
class AdvantageConfig:
    """Settings of the advantage estimators.

    eps: added to the std where an estimator divides by one (``grpo``, ``gspo``,
        ``reinforce++``).
    gamma: discount of the token returns of ``reinforce++`` (1.0 = undiscounted, the
        usual choice for outcome rewards).
    backend: backend of :func:`r1core.ops.group_advantages` (``None`` = fastest).
    """

    eps: float = 1e-6
    gamma: float = 1.0
    backend: str | None = None

    def __post_init__(self) -> None:
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")


class AdvantageOutput(NamedTuple):
    """advantages: float32 ``[B, T]``, zero outside the response mask.
    returns: float32 ``[B, T]``, the (unnormalised) returns the advantages were made from.
    zero_variance: bool ``[B]``, True where the response's group has identical rewards
        (no learning signal; dynamic sampling drops such groups). Always False when no
        groups were given.
    """

    advantages: torch.Tensor
    returns: torch.Tensor
    zero_variance: torch.Tensor


AdvantageEstimator = Callable[[AdvantageInputs, AdvantageConfig], AdvantageOutput]

ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")
register_advantage_estimator = ADVANTAGE_ESTIMATORS.register


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered as ``name`` (``KeyError`` listing valid names otherwise)."""
    return ADVANTAGE_ESTIMATORS.get(name)


def compute_advantages(name: str, inputs: AdvantageInputs, config: AdvantageConfig | None = None) -> AdvantageOutput:
    """Look up ``name`` and run it on ``inputs`` (default config when ``None``)."""
    return get_advantage_estimator(name)(inputs, config or AdvantageConfig())


# --- shared pieces ----------------------------------------------------------------------


def _validate(inputs: AdvantageInputs, needs_groups: bool) -> torch.Tensor:
    """Checks shapes; returns the float32 mask ``[B, T]``."""
    rewards, mask = inputs.rewards, inputs.response_mask
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be [B], got shape {tuple(rewards.shape)}")
    if mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"response_mask must be [B, T] with B={rewards.shape[0]}, got {tuple(mask.shape)}")
    if inputs.token_rewards is not None and inputs.token_rewards.shape != mask.shape:
        raise ValueError(
            f"token_rewards must have response_mask's shape {tuple(mask.shape)}, got {tuple(inputs.token_rewards.shape)}"
        )
    has_groups = inputs.group_size is not None or inputs.group_ids is not None
    if needs_groups and not has_groups:
        raise ValueError("this estimator needs groups: give group_size or group_ids")
    return mask.to(torch.float32)


def _sequence_scores(inputs: AdvantageInputs, mask: torch.Tensor) -> torch.Tensor:
    """``reward + sum_t token_rewards`` as float32 ``[B]``."""
    scores = inputs.rewards.to(torch.float32)
    if inputs.token_rewards is not None:
        scores = scores + (inputs.token_rewards.to(torch.float32) * mask).sum(1)
    return scores


def _grouped(scores: torch.Tensor, inputs: AdvantageInputs, mode: str, config: AdvantageConfig):
    return group_advantages(
        scores, group_size=inputs.group_size, group_ids=inputs.group_ids, mode=mode, eps=config.eps,
        backend=config.backend,
    )


def _sequence_estimator(mode: str) -> AdvantageEstimator:
    def estimate(inputs: AdvantageInputs, config: AdvantageConfig) -> AdvantageOutput:
        mask = _validate(inputs, needs_groups=True)
        scores = _sequence_scores(inputs, mask)
        result = _grouped(scores, inputs, mode, config)
        advantages = result.advantages.to(torch.float32)[:, None] * mask
        return AdvantageOutput(advantages, scores[:, None] * mask, result.zero_variance)

    estimate.__doc__ = f"Sequence-level group advantage (``{mode}`` mode of group_advantages) broadcast over tokens."
    return estimate


for _name, _mode in (("grpo", "grpo"), ("drgrpo", "drgrpo"), ("rloo", "rloo"), ("gspo", "grpo")):
    register_advantage_estimator(_name)(_sequence_estimator(_mode))


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = sum_{s >= t} gamma^(s - t) r_s`` over the masked tokens of each row.

    token_rewards, mask: float ``[B, T]``. Returns float32 ``[B, T]``, zero outside the mask.
    """
    rewards = token_rewards * mask
    if gamma == 1.0:
        # Reverse cumulative sum: no loop over T.
        returns = rewards.flip(1).cumsum(1).flip(1)
    else:
        returns = torch.zeros_like(rewards)
        running = torch.zeros_like(rewards[:, 0])
        for t in range(rewards.shape[1] - 1, -1, -1):
            running = rewards[:, t] + gamma * running
            returns[:, t] = running
    return returns * mask


def _outcome_token_rewards(outcome: torch.Tensor, inputs: AdvantageInputs, mask: torch.Tensor) -> torch.Tensor:
    """Per-token rewards with the outcome placed on each row's last response token."""
    num_tokens = mask.shape[1]
    positions = torch.arange(num_tokens, device=mask.device, dtype=torch.float32)
    # argmax of (position * mask) is the last masked position (0 for an empty row, whose
    # reward is then multiplied away by the mask).
    last = (positions[None, :] * mask).argmax(dim=1)
    rewards = torch.zeros_like(mask)
    rewards.scatter_(1, last[:, None], outcome[:, None])
    if inputs.token_rewards is not None:
        rewards = rewards + inputs.token_rewards.to(torch.float32)
    return rewards * mask


def _masked_mean_std(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std of ``values`` over the masked entries (0-d tensors)."""
    count = mask.sum()
    mean = (values * mask).sum() / count.clamp(min=1)
    var = (((values - mean) * mask) ** 2).sum() / (count - 1).clamp(min=1)
    return mean, var.sqrt()


def _zero_variance_flags(scores: torch.Tensor, inputs: AdvantageInputs, config: AdvantageConfig) -> torch.Tensor:
    if inputs.group_size is None and inputs.group_ids is None:
        return torch.zeros_like(scores, dtype=torch.bool)
    return _grouped(scores, inputs, "none", config).zero_variance


@register_advantage_estimator("reinforce++")
def reinforce_plus_plus(inputs: AdvantageInputs, config: AdvantageConfig) -> AdvantageOutput:
    """REINFORCE++: token returns (outcome on the last token plus any per-token rewards,
    discounted by ``gamma``) whitened over all response tokens of the batch. The batch mean
    is the baseline, so groups are optional (used only for the zero-variance flags)."""
    mask = _validate(inputs, needs_groups=False)
    rewards = inputs.rewards.to(torch.float32)
    returns = discounted_returns(_outcome_token_rewards(rewards, inputs, mask), mask, config.gamma)
    mean, std = _masked_mean_std(returns, mask)
    advantages = (returns - mean) / (std + config.eps) * mask
    return AdvantageOutput(advantages, returns, _zero_variance_flags(_sequence_scores(inputs, mask), inputs, config))


@register_advantage_estimator("reinforce++-baseline")
def reinforce_plus_plus_baseline(inputs: AdvantageInputs, config: AdvantageConfig) -> AdvantageOutput:
    """REINFORCE++ with a group baseline: outcome minus its group's mean reward, returns as
    in ``reinforce++``, divided by the batch std of the returns.

    The returns are not re-centred on the batch mean: the group mean is already the
    baseline, and re-centring would give every response of a zero-variance group the same
    non-zero advantage (a length-weighted batch offset) instead of zero.
    """
    mask = _validate(inputs, needs_groups=True)
    centred = _grouped(inputs.rewards.to(torch.float32), inputs, "drgrpo", config)
    returns = discounted_returns(_outcome_token_rewards(centred.advantages.float(), inputs, mask), mask, config.gamma)
    _, std = _masked_mean_std(returns, mask)
    advantages = returns / (std + config.eps) * mask
    zero_variance = _zero_variance_flags(_sequence_scores(inputs, mask), inputs, config)
    return AdvantageOutput(advantages, returns, zero_variance)
