"""AlgorithmConfig: presets, sub-configs, validation; the whole estimator -> loss path."""

import pytest
import torch

from r1core.algos import (
    PRESETS,
    AdvantageInputs,
    AlgorithmConfig,
    LossInputs,
    compute_advantages,
    compute_policy_loss,
    kl_reward,
)


def test_presets_build_and_route_the_kl():
    assert set(PRESETS) >= {"grpo", "dapo", "drgrpo", "gspo", "cispo", "rloo", "reinforce++", "reinforce++-baseline"}
    grpo = AlgorithmConfig.from_preset("grpo")
    assert grpo.needs_reference and grpo.loss_config().kl_coef == 0.04
    reinforce = AlgorithmConfig.from_preset("reinforce++")
    assert reinforce.needs_reference and reinforce.loss_config().kl_coef == 0.0  # KL goes in the reward
    dapo = AlgorithmConfig.from_preset("dapo", clip_high=0.3)
    assert not dapo.needs_reference and dapo.loss_config().clip_high == 0.3
    with pytest.raises(KeyError, match="valid: cispo, dapo"):
        AlgorithmConfig.from_preset("vapo")


def test_validation_names_the_cause():
    with pytest.raises(KeyError, match="unknown advantage estimator 'gae'"):
        AlgorithmConfig(estimator="gae")
    with pytest.raises(KeyError, match="unknown policy loss"):
        AlgorithmConfig(loss="sft")
    with pytest.raises(ValueError, match="kl_mode"):
        AlgorithmConfig(kl_mode="both")
    with pytest.raises(ValueError, match="kl_mode='off'"):
        AlgorithmConfig(kl_coef=0.1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_end_to_end(preset):
    algo = AlgorithmConfig.from_preset(preset)
    generator = torch.Generator().manual_seed(0)
    batch, length = 8, 5
    mask = torch.ones(batch, length)
    mask[1, 3:] = 0
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    logp = (-torch.rand(batch, length, generator=generator)).requires_grad_(True)
    old = logp.detach() + 0.01 * torch.randn(batch, length, generator=generator)
    ref = logp.detach() + 0.05 * torch.randn(batch, length, generator=generator)
    token_rewards = kl_reward(logp, ref, mask, coef=algo.kl_coef, estimator=algo.kl_estimator) if algo.kl_mode == "reward" else None
    adv = compute_advantages(algo.estimator, AdvantageInputs(rewards, mask, group_size=4, token_rewards=token_rewards), algo.advantage_config())
    loss, metrics = compute_policy_loss(algo.loss, LossInputs(logp, old, adv.advantages, mask, ref_logp=ref), algo.loss_config())
    loss.backward()
    assert torch.isfinite(loss) and logp.grad.abs().sum() > 0
    assert (logp.grad[mask == 0] == 0).all()
