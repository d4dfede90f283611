"""GRPO loss straight from hidden states: log-probs, loss and gradients in one op.

The loss gradient of each token depends only on per-token scalars (its log-prob, old and
reference log-probs, advantage, mask and the row's aggregation weight), so once the forward
statistics give ``logp`` the per-token ``dL/dlogp`` is known and the log-prob backward
kernel can produce ``dL/dhidden`` and ``dL/dweight`` right away. The op therefore runs
statistics kernel -> tiny elementwise loss -> gradient kernel inside its forward, keeps only
the two gradients, and its backward scales them by the incoming scalar. No per-token
probabilities or logits are stored, and the FLOPs equal log-prob forward + backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from r1core.ops import _backend
from r1core.ops.grpo_loss import aggregate, check_aggregation, loss_from_row_stats, make_clip_params
from r1core.ops.fused_logprobs import combine_stats, shard_labels, validate_logprobs_inputs


class _FusedGRPOLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, token_inputs, settings, impls):
        old_logp, advantages, mask, ref_logp, rollout_logp, ignored = token_inputs
        params, kl_coef, entropy_coef, aggregation, length, inv_temperature, tp_group = settings
        logprobs_impl, loss_impl = impls
        shape = mask.shape
        need_entropy = entropy_coef != 0
        stats = logprobs_impl.stats(hidden, weight, labels, inv_temperature, need_entropy)
        logp, entropy, lse = combine_stats(stats, tp_group)
        # Ignored tokens are outside the mask (so outside the loss, the token counts and the
        # entropy); a finite stand-in log-prob keeps 0 * their terms at 0.
        logp = logp.masked_fill(ignored, 0.0)
        logp_rows = logp.view(shape)
        rows = loss_impl.row_stats(logp_rows, old_logp, advantages, mask, ref_logp, rollout_logp, params)
        # Autograd over the [B]-sized aggregation yields each row's weight in the loss.
        with torch.enable_grad():
            rows_leaf = rows.detach().requires_grad_(True)
            loss, metrics = loss_from_row_stats(rows_leaf, kl_coef, aggregation, length)
            leaves = [rows_leaf]
            if need_entropy:
                entropy_rows = (entropy.view(shape) * mask.to(entropy.dtype)).sum(1).detach().requires_grad_(True)
                entropy_mean = aggregate(entropy_rows, rows_leaf[:, 2].detach(), aggregation, length)
                loss = loss - entropy_coef * entropy_mean
                metrics["entropy"] = entropy_mean.detach()
                leaves.append(entropy_rows)
            row_grads = torch.autograd.grad(loss, leaves)
        grad_logp = loss_impl.row_backward(
            row_grads[0][:, 0].contiguous(), row_grads[0][:, 1].contiguous(),
            logp_rows, old_logp, advantages, mask, ref_logp, rollout_logp, params,
        ).reshape(-1)
        if need_entropy:
            grad_entropy = (row_grads[1][:, None] * mask.to(entropy.dtype)).reshape(-1)
        else:
            grad_entropy = entropy.new_empty(0)
        grad_hidden, grad_weight = logprobs_impl.backward(
            hidden, weight, labels, lse, entropy, grad_logp.to(lse.dtype).contiguous(),
            grad_entropy.to(lse.dtype).contiguous(), inv_temperature,
        )
        if tp_group is not None and dist.get_world_size(tp_group) > 1:
            dist.all_reduce(grad_hidden, op=dist.ReduceOp.SUM, group=tp_group)
        ctx.save_for_backward(grad_hidden, grad_weight)
        loss = loss.detach()
        names = sorted(metrics)
        ctx.mark_non_differentiable(*[metrics[name] for name in names])
        ctx.metric_names = names
        return (loss, *[metrics[name] for name in names])

    @staticmethod
    def backward(ctx, grad_loss, *unused_metric_grads):
        grad_hidden, grad_weight = ctx.saved_tensors
        # Scaled in place: a copy of grad_weight is [V, H] (vocabulary x hidden, over 1 GB at
        # the 152k x 8k shape), the largest buffer of the op. The graph cannot be replayed
        # afterwards (retain_graph=True then fails on the saved tensors' version check).
        return grad_hidden.mul_(grad_loss.to(grad_hidden.dtype)), grad_weight.mul_(grad_loss.to(grad_weight.dtype)), None, None, None, None


def fused_grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    ref_logp: torch.Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy_coef: float = 0.0,
    aggregation: str = "token-mean",
    norm_length: float | None = None,
    rollout_logp: torch.Tensor | None = None,
    is_cap: float | None = None,
    tp_group: dist.ProcessGroup | None = None,
    vocab_start: int = 0,
    backend: str | None = None,
    validate: bool = True,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`~r1core.ops.grpo_loss` of the log-probs :func:`~r1core.ops.fused_logprobs`
    would give, computed in one op that never stores per-token probabilities.

    Args:
        hidden: ``[B, T, H]`` (or ``[B * T, H]``) final hidden states.
        weight: ``[V_local, H]`` LM head (this rank's vocabulary slice under ``tp_group``).
        labels: int ``[B, T]`` sampled token ids (global ids).
        old_logp, mask, ref_logp, rollout_logp: ``[B, T]``; advantages ``[B]`` or ``[B, T]``.
        entropy_coef: subtracts ``entropy_coef * aggregate(entropy)`` from the loss
            (an entropy bonus); the entropy is then also reported in the metrics.
        ignore_index: tokens with this label are dropped from ``mask``: they add nothing to
            the loss, the entropy or ``num_tokens``, and get no gradient.
        The other arguments are those of ``grpo_loss`` and ``fused_logprobs``.

    Returns:
        ``(loss, metrics)`` as :func:`~r1core.ops.grpo_loss`; ``loss`` is differentiable in
        ``hidden`` and ``weight``.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}")
    shape = mask.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    if flat_hidden.shape[0] != shape.numel():
        raise ValueError(f"hidden has {flat_hidden.shape[0]} tokens but mask is {tuple(shape)}")
    if labels.shape != shape:
        raise ValueError(f"labels must be {tuple(shape)}, got {tuple(labels.shape)}")
    for name, tensor in (("old_logp", old_logp), ("ref_logp", ref_logp), ("rollout_logp", rollout_logp)):
        if tensor is not None and tensor.shape != shape:
            raise ValueError(f"{name} must be {tuple(shape)}, got {tuple(tensor.shape)}")
    if advantages.shape == shape[:1]:
        advantages = advantages[:, None].expand(shape)
    elif advantages.shape != shape:
        raise ValueError(f"advantages must be [B] or [B, T] for {tuple(shape)}, got {tuple(advantages.shape)}")
    if kl_coef != 0 and ref_logp is None:
        raise ValueError("kl_coef != 0 needs ref_logp")
    if (rollout_logp is None) != (is_cap is None):
        raise ValueError("truncated importance sampling needs both rollout_logp and is_cap")
    flat_labels = labels.reshape(-1)
    validate_logprobs_inputs(flat_hidden, weight, flat_labels, temperature, vocab_start, tp_group, validate, ignore_index)
    local_labels, ignored = shard_labels(flat_labels, vocab_start, ignore_index)
    ignored = ignored.view(shape)
    mask = mask & ~ignored if mask.dtype == torch.bool else mask.masked_fill(ignored, 0)
    params = make_clip_params(clip_low, clip_high, dual_clip, kl_estimator, is_cap)
    length = check_aggregation(aggregation, norm_length, shape[1])
    _, logprobs_impl = _backend.resolve("fused_logprobs", backend, hidden.device)
    # The named backend is for the log-prob kernels, where all the FLOPs are; the [B, T]
    # loss terms use the same backend when it has them, else the automatic choice.
    loss_backend = backend if backend in _backend.available("grpo_loss", hidden.device) else None
    _, loss_impl = _backend.resolve("grpo_loss", loss_backend, hidden.device)
    settings = (params, kl_coef, entropy_coef, aggregation, length, 1.0 / temperature, tp_group)
    token_inputs = (old_logp, advantages, mask, ref_logp, rollout_logp, ignored.reshape(-1))
    outputs = _FusedGRPOLossFunction.apply(flat_hidden, weight, local_labels, token_inputs, settings, (logprobs_impl, loss_impl))
    names = ["entropy"] if entropy_coef != 0 else []
    names = sorted(names + ["pg_loss", "kl", "clip_frac_low", "clip_frac_high", "dual_clip_frac", "ratio_mean", "ratio_max", "num_tokens"])
    return outputs[0], dict(zip(names, outputs[1:]))
