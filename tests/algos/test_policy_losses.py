"""Policy losses: agreement with r1core.ops, hand formulas, and GSPO/CISPO gradients
against autograd of their plain (sequence-level / paper) formulas."""

import pytest
import torch

from r1core.algos import POLICY_LOSSES, LossConfig, LossInputs, compute_policy_loss, get_policy_loss
from r1core.ops import grpo_loss
from r1core.testing import make_grpo_loss_inputs


def make_inputs(batch=6, length=9, seed=0, spread=0.3, per_token_adv=False, dtype=torch.float64):
    data = make_grpo_loss_inputs(batch, length, seed=seed, spread=spread, dtype=dtype)
    logp = data["logp"].clone().requires_grad_(True)
    advantages = data["advantages"]
    if per_token_adv:
        generator = torch.Generator().manual_seed(seed + 100)
        advantages = torch.randn(batch, length, generator=generator, dtype=dtype)
    entropy = torch.rand(batch, length, generator=torch.Generator().manual_seed(seed + 7), dtype=dtype).requires_grad_(True)
    return LossInputs(
        logp, data["old_logp"], advantages, data["mask"].to(dtype), ref_logp=data["ref_logp"],
        rollout_logp=data["rollout_logp"], entropy=entropy,
    )


def test_registry_names_and_error():
    assert set(POLICY_LOSSES.names()) == {"grpo", "ppo", "dapo", "drgrpo", "gspo", "cispo"}
    with pytest.raises(KeyError, match="valid: cispo, dapo, drgrpo, grpo, gspo, ppo"):
        get_policy_loss("sapo")


OPS_CASES = [
    ("grpo", {}, dict(clip_low=0.2, clip_high=0.2, aggregation="seq-mean-token-mean")),
    ("ppo", {"dual_clip": 3.0}, dict(clip_low=0.2, clip_high=0.2, dual_clip=3.0, aggregation="token-mean")),
    ("dapo", {}, dict(clip_low=0.2, clip_high=0.28, aggregation="token-mean")),
    ("drgrpo", {"norm_length": 16}, dict(clip_low=0.2, clip_high=0.2, aggregation="seq-mean-token-sum-norm", norm_length=16)),
    ("grpo", {"kl_coef": 0.05, "kl_estimator": "k2"}, dict(clip_low=0.2, clip_high=0.2, aggregation="seq-mean-token-mean", kl_coef=0.05, kl_estimator="k2")),
    ("dapo", {"is_cap": 2.0}, dict(clip_low=0.2, clip_high=0.28, aggregation="token-mean", is_cap=2.0)),
]


@pytest.mark.parametrize("name,config,ops_kwargs", OPS_CASES)
def test_ops_configurations_equal_r1core_ops_grpo_loss(name, config, ops_kwargs):
    inputs = make_inputs(spread=0.5)
    loss, metrics = compute_policy_loss(name, inputs, LossConfig(**config))
    (grad,) = torch.autograd.grad(loss, inputs.logp)
    logp = inputs.logp.detach().clone().requires_grad_(True)
    ref = inputs.ref_logp if ops_kwargs.get("kl_coef") else None
    rollout = inputs.rollout_logp if "is_cap" in ops_kwargs else None
    expected, expected_metrics = grpo_loss(
        logp, inputs.old_logp, inputs.advantages, inputs.mask, ref_logp=ref, rollout_logp=rollout,
        backend="reference", **ops_kwargs,
    )
    (expected_grad,) = torch.autograd.grad(expected, logp)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)
    assert metrics["clip_frac_high"] == expected_metrics["clip_frac_high"]


def test_hand_computed_clipped_surrogate_and_dual_clip():
    # Token 0: A=1, ratio 1.5 -> clipped at 1.2, loss -1.2, no gradient.
    # Token 1: A=-1, ratio 5 -> unclipped 5, dual clip 3 bounds it at 3, no gradient.
    # Token 2: A=1, ratio 1 -> loss -1, gradient -1 (d ratio / d logp = ratio).
    old = torch.zeros(1, 3, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.5, 5.0, 1.0]], dtype=torch.float64)).requires_grad_(True)
    advantages = torch.tensor([[1.0, -1.0, 1.0]], dtype=torch.float64)
    inputs = LossInputs(logp, old, advantages, torch.ones(1, 3, dtype=torch.float64))
    loss, metrics = compute_policy_loss("ppo", inputs, LossConfig(dual_clip=3.0))
    torch.testing.assert_close(loss, torch.tensor((-1.2 + 3.0 - 1.0) / 3, dtype=loss.dtype))
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.0, -1.0 / 3]], dtype=torch.float64))
    assert metrics["dual_clip_frac"].item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_entropy_bonus_is_subtracted_with_the_loss_aggregation(aggregation):
    inputs = make_inputs()
    base, _ = compute_policy_loss("grpo", inputs, LossConfig(aggregation=aggregation))
    loss, metrics = compute_policy_loss("grpo", inputs, LossConfig(aggregation=aggregation, entropy_coef=0.01))
    mask = inputs.mask
    rows = (inputs.entropy * mask).sum(1)
    tokens = mask.sum(1)
    expected_entropy = {
        "token-mean": rows.sum() / tokens.sum(),
        "seq-mean-token-mean": (rows / tokens).mean(),
        "seq-mean-token-sum": rows.mean(),
        "seq-mean-token-sum-norm": rows.sum() / (mask.shape[0] * mask.shape[1]),
    }[aggregation]
    torch.testing.assert_close(metrics["entropy"].double(), expected_entropy.detach())
    torch.testing.assert_close((base - loss).double(), 0.01 * expected_entropy.detach(), rtol=1e-5, atol=1e-7)
    (grad_entropy,) = torch.autograd.grad(loss, inputs.entropy)
    assert torch.all(grad_entropy[mask == 0] == 0) and torch.all(grad_entropy[mask > 0] < 0)


def gspo_sequence_reference(logp, old_logp, advantages, mask, clip_low, clip_high):
    """GSPO as written in the paper: one ratio per sequence, one term per sequence."""
    tokens = mask.sum(1)
    seq_ratio = torch.exp(((logp - old_logp) * mask).sum(1) / tokens)
    unclipped = seq_ratio * advantages
    clipped = torch.clamp(seq_ratio, 1 - clip_low, 1 + clip_high) * advantages
    return -torch.minimum(unclipped, clipped).mean()


@pytest.mark.parametrize("spread", [1e-4, 0.3])
def test_gspo_matches_sequence_level_formula_value_and_gradient(spread):
    inputs = make_inputs(spread=spread, seed=4)
    loss, metrics = compute_policy_loss("gspo", inputs, LossConfig())
    (grad,) = torch.autograd.grad(loss, inputs.logp)
    logp = inputs.logp.detach().clone().requires_grad_(True)
    expected = gspo_sequence_reference(logp, inputs.old_logp, inputs.advantages, inputs.mask, 3e-4, 4e-4)
    (expected_grad,) = torch.autograd.grad(expected, logp)
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-5, atol=1e-8)
    assert torch.count_nonzero(grad) > 0
    if spread > 0.1:
        # With a wide spread most sequences leave GSPO's narrow clip range.
        assert (metrics["clip_frac_low"] + metrics["clip_frac_high"]).item() > 0.5


def test_gspo_token_advantages_follow_the_token_form():
    inputs = make_inputs(per_token_adv=True, seed=5, spread=1e-4)
    loss, _ = compute_policy_loss("gspo", inputs, LossConfig(aggregation="token-mean"))
    (grad,) = torch.autograd.grad(loss, inputs.logp)
    # Inside the clip range d/dlogp_t = -A_t * s_i / N_tokens.
    mask = inputs.mask
    seq_ratio = torch.exp(((inputs.logp.detach() - inputs.old_logp) * mask).sum(1) / mask.sum(1))
    expected = -inputs.advantages * seq_ratio[:, None] * mask / mask.sum()
    torch.testing.assert_close(grad, expected)


def cispo_paper_objective(logp, old_logp, advantages, mask, clip_low, clip_high):
    """MiniMax-M1's CISPO: token-level sum of sg(clipped IS weight) * A * log pi over all tokens."""
    weight = torch.clamp(torch.exp(logp - old_logp), 1 - clip_low, 1 + clip_high).detach()
    return -(weight * advantages * logp * mask).sum() / mask.sum()


@pytest.mark.parametrize("per_token_adv", [False, True])
def test_cispo_gradient_matches_paper_objective(per_token_adv):
    inputs = make_inputs(spread=0.6, seed=6, per_token_adv=per_token_adv)
    loss, metrics = compute_policy_loss("cispo", inputs, LossConfig(clip_low=0.5, clip_high=0.3))
    (grad,) = torch.autograd.grad(loss, inputs.logp)
    logp = inputs.logp.detach().clone().requires_grad_(True)
    adv = inputs.advantages if per_token_adv else inputs.advantages[:, None].expand_as(logp)
    objective = cispo_paper_objective(logp, inputs.old_logp, adv, inputs.mask, 0.5, 0.3)
    (expected_grad,) = torch.autograd.grad(objective, logp)
    torch.testing.assert_close(grad.double(), expected_grad)
    # Clipping bounds the weight but every masked token keeps a gradient where A != 0.
    assert metrics["clip_frac_high"].item() > 0
    nonzero_adv = (adv != 0) & (inputs.mask > 0)
    assert torch.all(grad[nonzero_adv] != 0)
    weight = torch.clamp(torch.exp(logp.detach() - inputs.old_logp), 0.5, 1.3)
    expected_value = -(weight * adv * inputs.mask).sum() / inputs.mask.sum()
    torch.testing.assert_close(loss.double(), expected_value)


def test_cispo_truncated_is_and_kl():
    inputs = make_inputs(seed=8)
    config = LossConfig(is_cap=1.5, kl_coef=0.1, kl_estimator="k3")
    loss, metrics = compute_policy_loss("cispo", inputs, config)
    logp = inputs.logp.detach()
    mask = inputs.mask
    adv = inputs.advantages[:, None]
    weight = torch.clamp(torch.exp(logp - inputs.old_logp), 0.0, 1.28)
    weight = weight * torch.clamp(torch.exp(inputs.old_logp - inputs.rollout_logp), max=1.5)
    diff = logp - inputs.ref_logp
    kl = torch.exp(-diff) + diff - 1
    expected = (-(weight * adv) * mask).sum() / mask.sum() + 0.1 * (kl * mask).sum() / mask.sum()
    torch.testing.assert_close(loss.double(), expected)
    torch.testing.assert_close(metrics["kl"].double(), (kl * mask).sum() / mask.sum())


def test_gspo_kl_and_sequence_level_truncated_is():
    inputs = make_inputs(seed=9, spread=1e-4)
    loss, _ = compute_policy_loss("gspo", inputs, LossConfig(is_cap=1.2, kl_coef=0.2, kl_estimator="k1"))
    logp, mask = inputs.logp.detach(), inputs.mask
    tokens = mask.sum(1)
    seq_ratio = torch.exp(((logp - inputs.old_logp) * mask).sum(1) / tokens)
    seq_is = torch.clamp(torch.exp(((inputs.old_logp - inputs.rollout_logp) * mask).sum(1) / tokens), max=1.2)
    a = inputs.advantages
    pg = torch.maximum(-a * seq_ratio, -a * torch.clamp(seq_ratio, 1 - 3e-4, 1 + 4e-4)) * seq_is
    kl = (((logp - inputs.ref_logp) * mask).sum(1) / tokens).mean()
    torch.testing.assert_close(loss.double(), pg.mean() + 0.2 * kl)


@pytest.mark.parametrize("name", ["grpo", "ppo", "dapo", "drgrpo", "gspo", "cispo"])
def test_metrics_are_detached_tensors_and_loss_is_differentiable(name):
    inputs = make_inputs(dtype=torch.float32)
    loss, metrics = compute_policy_loss(name, inputs, LossConfig(kl_coef=0.01, entropy_coef=0.001))
    assert loss.dim() == 0 and loss.requires_grad
    assert {"loss", "pg_loss", "kl", "entropy", "clip_frac_low", "clip_frac_high", "ratio_mean", "num_tokens"} <= set(metrics)
    for key, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad, key
    loss.backward()
    assert torch.isfinite(inputs.logp.grad).all()


def test_clear_errors():
    inputs = make_inputs()
    with pytest.raises(ValueError, match="defined with aggregation 'token-mean'"):
        compute_policy_loss("dapo", inputs, LossConfig(aggregation="seq-mean-token-mean"))
    with pytest.raises(ValueError, match="dual_clip is not defined for the cispo"):
        compute_policy_loss("cispo", inputs, LossConfig(dual_clip=3.0))
    bare = LossInputs(inputs.logp, inputs.old_logp, inputs.advantages, inputs.mask)
    with pytest.raises(ValueError, match="needs LossInputs.entropy"):
        compute_policy_loss("grpo", bare, LossConfig(entropy_coef=0.1))
    with pytest.raises(ValueError, match="needs LossInputs.rollout_logp"):
        compute_policy_loss("gspo", bare, LossConfig(is_cap=2.0))
    with pytest.raises(ValueError, match="needs LossInputs.ref_logp"):
        compute_policy_loss("cispo", bare, LossConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="unknown aggregation"):
        LossConfig(aggregation="sum")
    with pytest.raises(ValueError, match="advantages must be"):
        compute_policy_loss("gspo", LossInputs(inputs.logp, inputs.old_logp, torch.zeros(3), inputs.mask))


@pytest.mark.parametrize("name", ["grpo", "dapo", "drgrpo"])
def test_ops_loss_kwargs_drive_the_fused_hidden_state_op(name):
    from r1core.algos import ops_loss_kwargs
    from r1core.ops import fused_grpo_loss, logprobs_naive
    from r1core.testing import make_logprobs_inputs

    batch, length, hidden_size, vocab = 3, 5, 16, 37
    hidden, weight, labels = make_logprobs_inputs(batch * length, hidden_size, vocab, seed=2, requires_grad=True)
    data = make_grpo_loss_inputs(batch, length, seed=2, spread=0.4)
    mask = data["mask"].float()
    config = LossConfig(kl_coef=0.02, entropy_coef=0.01, norm_length=8 if name == "drgrpo" else None)
    kwargs = ops_loss_kwargs(name, config)
    fused, _ = fused_grpo_loss(
        hidden, weight, labels.view(batch, length), data["old_logp"], data["advantages"], mask,
        ref_logp=data["ref_logp"], **kwargs,
    )
    grads = torch.autograd.grad(fused, (hidden, weight))
    hidden2, weight2 = hidden.detach().clone().requires_grad_(True), weight.detach().clone().requires_grad_(True)
    logp, entropy = logprobs_naive(hidden2, weight2, labels)
    inputs = LossInputs(logp.view(batch, length), data["old_logp"], data["advantages"], mask,
                        ref_logp=data["ref_logp"], entropy=entropy.view(batch, length))
    loss, _ = compute_policy_loss(name, inputs, config)
    expected = torch.autograd.grad(loss, (hidden2, weight2))
    torch.testing.assert_close(fused, loss, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="not a configuration of r1core.ops.grpo_loss"):
        ops_loss_kwargs("gspo", config)
