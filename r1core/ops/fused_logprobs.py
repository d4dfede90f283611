"""Fused log-probabilities (and entropy) straight from hidden states and the LM-head weight.

    logp[i]    = log softmax(hidden[i] @ weight.T / temperature)[labels[i]]
    entropy[i] = -sum_j p_ij log p_ij

computed without ever allocating the ``[N, V]`` logits: every backend streams vocabulary
tiles and keeps, per token, the running max ``m``, the sum ``s = sum_j exp(z_j - m)``, the
sum ``t = sum_j exp(z_j - m) z_j`` (for the entropy) and the target logit. Those four
numbers combine across vocabulary shards with two small all-reduces, which is all that
vocabulary (tensor) parallelism needs:

    lse = M + log S,  logp = z_y - lse,  entropy = lse - T / S.

Backward recomputes the logits tile by tile from the saved ``lse`` and ``entropy``:

    dL/dz_j = g_logp (1[j = y] - p_j) - g_entropy p_j (z_j - lse + entropy)

Reading order: the naive specification, the chunked reference backend (the same algorithm
as the kernels, in plain PyTorch), the autograd Function, the public function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from r1core.ops import _backend

NUM_STATS = 4  # rows of the statistics tensor: max, sum-exp, sum-exp * z, target logit


def logprobs_naive(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The specification: full logits, ``log_softmax``, gather. Returns ``(logp, entropy)``
    ``[N]`` in the logits' dtype. Allocates ``[N, V]``: for tests and tiny inputs only."""
    logits = (hidden @ weight.T) / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    logp = logprobs.gather(-1, labels[:, None].long()).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return logp, entropy


# --- the reference backend: chunked over the vocabulary, plain PyTorch -------------------

VOCAB_CHUNK = 4096


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def logprobs_stats_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    inv_temperature: float,
    need_entropy: bool,
) -> torch.Tensor:
    """Per-token statistics over this vocabulary shard.

    Args: hidden ``[N, H]``, weight ``[V, H]`` (same dtype), labels int64 ``[N]`` relative to
    this shard (out-of-shard labels contribute 0 to the target row).
    Returns float32 (float64 for float64 input) ``[4, N]``: max ``m``, ``sum exp(z - m)``,
    ``sum exp(z - m) z`` (zeros unless ``need_entropy``), target logit ``z[label]``.
    """
    dtype = _compute_dtype(hidden)
    num_tokens, vocab = hidden.shape[0], weight.shape[0]
    h = hidden.to(dtype)
    running_max = torch.full((num_tokens,), float("-inf"), dtype=dtype, device=hidden.device)
    sum_exp = torch.zeros(num_tokens, dtype=dtype, device=hidden.device)
    sum_exp_z = torch.zeros_like(sum_exp)
    target = torch.zeros_like(sum_exp)
    for start in range(0, vocab, VOCAB_CHUNK):
        z = (h @ weight[start : start + VOCAB_CHUNK].to(dtype).T) * inv_temperature
        new_max = torch.maximum(running_max, z.amax(dim=1))
        rescale = torch.exp(running_max - new_max)
        e = torch.exp(z - new_max[:, None])
        sum_exp = sum_exp * rescale + e.sum(1)
        if need_entropy:
            sum_exp_z = sum_exp_z * rescale + (e * z).sum(1)
        running_max = new_max
        local = labels - start
        inside = (local >= 0) & (local < z.shape[1])
        picked = z.gather(1, local.clamp(0, z.shape[1] - 1)[:, None]).squeeze(1)
        target = torch.where(inside, picked, target)
    return torch.stack([running_max, sum_exp, sum_exp_z, target])


def logprobs_backward_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: torch.Tensor,
    grad_entropy: torch.Tensor,
    inv_temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients for this vocabulary shard from the global ``lse`` and ``entropy`` ``[N]``.

    ``grad_entropy`` (and ``entropy``) may be empty tensors when no gradient flows into the
    entropy. Returns ``(grad_hidden [N, H], grad_weight [V, H])`` in the inputs' dtypes,
    accumulated in float32 (float64 for float64 input). ``grad_hidden`` is this shard's
    partial sum; the caller all-reduces it under tensor parallelism.
    """
    dtype = _compute_dtype(hidden)
    h = hidden.to(dtype)
    grad_hidden = torch.zeros_like(h)
    grad_weight = torch.empty_like(weight)
    has_entropy = grad_entropy.numel() > 0
    for start in range(0, weight.shape[0], VOCAB_CHUNK):
        w = weight[start : start + VOCAB_CHUNK].to(dtype)
        z = (h @ w.T) * inv_temperature
        p = torch.exp(z - lse[:, None])
        grad_z = -grad_logp[:, None] * p
        if has_entropy:
            grad_z = grad_z - grad_entropy[:, None] * p * (z - lse[:, None] + entropy[:, None])
        local = labels - start
        inside = (local >= 0) & (local < w.shape[0])
        rows = inside.nonzero().squeeze(1)
        grad_z[rows, local[rows]] += grad_logp[rows]
        grad_logits = grad_z * inv_temperature
        grad_hidden += grad_logits @ w
        grad_weight[start : start + VOCAB_CHUNK] = (grad_logits.T @ h).to(weight.dtype)
    return grad_hidden.to(hidden.dtype), grad_weight


@dataclass(frozen=True)
class LogprobsImpl:
    """A backend's two primitives, with the signatures of the reference functions above."""

    stats: Callable[..., torch.Tensor]
    backward: Callable[..., tuple[torch.Tensor, torch.Tensor]]


_backend.register_impl(
    "fused_logprobs", "reference", LogprobsImpl(logprobs_stats_reference, logprobs_backward_reference)
)


# --- combining shards, autograd ---------------------------------------------------------


def combine_stats(stats: torch.Tensor, tp_group: dist.ProcessGroup | None) -> tuple[torch.Tensor, ...]:
    """Turn per-shard statistics ``[4, N]`` into global ``(logp, entropy, lse)`` ``[N]``.

    Under tensor parallelism: one MAX all-reduce of ``[N]`` and one SUM all-reduce of
    ``[3, N]`` (sum-exp and sum-exp*z rescaled to the global max, and the target logit,
    which exactly one shard holds).
    """
    running_max, sum_exp, sum_exp_z, target = stats.unbind(0)
    if tp_group is not None and dist.get_world_size(tp_group) > 1:
        global_max = running_max.clone()
        dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=tp_group)
        rescale = torch.exp(running_max - global_max)
        packed = torch.stack([sum_exp * rescale, sum_exp_z * rescale, target])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=tp_group)
        sum_exp, sum_exp_z, target = packed.unbind(0)
        running_max = global_max
    lse = running_max + torch.log(sum_exp)
    logp = target - lse
    entropy = lse - sum_exp_z / sum_exp
    return logp, entropy, lse


def shard_labels(labels: torch.Tensor, vocab_start: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shard-local int64 labels [N], ignored bool [N])``. Ignored tokens get the local label
    -1, which no column of any shard matches, so every backend's kernels take no target logit
    for them; the autograd Function then zeroes their outputs and gradients."""
    ignored = labels == ignore_index
    local = torch.where(ignored, -1, labels.long() - vocab_start)
    return local, ignored


class _FusedLogprobsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, ignored, inv_temperature, need_entropy, tp_group, impl):
        stats = impl.stats(hidden, weight, labels, inv_temperature, need_entropy)
        logp, entropy, lse = combine_stats(stats, tp_group)
        # Ignored tokens: log p 0 and entropy 0 (their statistics are computed with the rest:
        # skipping rows inside a tile saves nothing, and compacting them needs a host sync).
        logp = logp.masked_fill(ignored, 0.0)
        entropy_out = entropy.masked_fill(ignored, 0.0)
        ctx.save_for_backward(hidden, weight, labels, ignored, lse, entropy)
        ctx.inv_temperature = inv_temperature
        ctx.tp_group = tp_group
        ctx.impl = impl
        if not need_entropy:
            entropy_out = entropy.new_empty(0)
            ctx.mark_non_differentiable(entropy_out)
        return logp, entropy_out

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, labels, ignored, lse, entropy = ctx.saved_tensors
        if grad_logp is None:
            grad_logp = torch.zeros_like(lse)
        if grad_entropy is None or grad_entropy.numel() == 0:
            grad_entropy = entropy.new_empty(0)
        else:
            grad_entropy = grad_entropy.masked_fill(ignored, 0.0)
        # Zero upstream gradient on ignored rows: their dL/dlogits are exactly 0, because the
        # saved lse and entropy of those rows are the real, finite ones.
        grad_hidden, grad_weight = ctx.impl.backward(
            hidden,
            weight,
            labels,
            lse,
            entropy,
            grad_logp.masked_fill(ignored, 0.0).to(lse.dtype).contiguous(),
            grad_entropy.to(lse.dtype).contiguous(),
            ctx.inv_temperature,
        )
        tp_group = ctx.tp_group
        if tp_group is not None and dist.get_world_size(tp_group) > 1:
            # hidden is replicated over the group; each shard saw only its vocabulary
            # slice, so the full gradient is the sum of the shards' partial gradients.
            dist.all_reduce(grad_hidden, op=dist.ReduceOp.SUM, group=tp_group)
        return grad_hidden, grad_weight, None, None, None, None, None, None


def validate_logprobs_inputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    vocab_start: int,
    tp_group: dist.ProcessGroup | None,
    validate: bool,
    ignore_index: int = -100,
) -> None:
    """Shape, dtype and label-range checks shared by the log-prob ops."""
    if hidden.dim() != 2 or weight.dim() != 2:
        raise ValueError(
            f"hidden must be [N, H] and weight [V, H]; got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden size mismatch: hidden has H={hidden.shape[1]}, weight has H={weight.shape[1]}")
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels must be [N]={hidden.shape[0]}, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden ({hidden.dtype}) and weight ({weight.dtype}) must share a dtype")
    if hidden.device != weight.device or labels.device != hidden.device:
        raise ValueError("hidden, weight and labels must be on the same device")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    world = dist.get_world_size(tp_group) if tp_group is not None else 1
    if world == 1 and vocab_start != 0:
        raise ValueError("vocab_start is only meaningful with a tp_group of more than one rank")
    # Megatron partitions the (padded) vocabulary equally across the group.
    vocab_size = weight.shape[0] * world
    if validate and labels.numel() > 0:
        # On CPU this is free; on CUDA it is one host synchronisation (pass validate=False in
        # hot loops once the token ids have been checked on the host).
        kept = labels[labels != ignore_index]
        if kept.numel() > 0:
            low, high = int(kept.min()), int(kept.max())
            if low < 0 or high >= vocab_size:
                bad = low if low < 0 else high
                raise ValueError(
                    f"label {bad} is outside the vocabulary [0, {vocab_size}) "
                    f"(weight has {weight.shape[0]} rows x {world} tensor-parallel ranks) "
                    f"and is not the ignore_index {ignore_index}"
                )


def fused_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
    tp_group: dist.ProcessGroup | None = None,
    vocab_start: int = 0,
    backend: str | None = None,
    validate: bool = True,
    ignore_index: int = -100,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``labels`` (and the entropy) under ``softmax(hidden @ weight.T / T)``.

    Never allocates ``[N, V]``. Differentiable in ``hidden`` and ``weight``.

    Args:
        hidden: ``[N, H]`` float32, bfloat16, float16 or float64.
        weight: ``[V_local, H]``, same dtype: the LM head, or this rank's vocabulary slice.
        labels: int ``[N]``, global token ids in ``[0, V_local * tp_world_size)``.
        temperature: logits are divided by it (use the sampler's temperature so that the
            log-probs match the rollout's).
        return_entropy: also return the entropy of the full distribution.
        tp_group: vocabulary-parallel group. ``hidden`` must be identical on every rank;
            the statistics are combined with two small all-reduces, and the gradient of
            ``hidden`` returned on each rank is the full one (all-reduced in backward).
        vocab_start: first global token id of this rank's slice.
        backend: ``None``/``"auto"``, ``"reference"``, ``"triton"``, ``"triton-persistent"``, ``"cpp"``, ``"cuda"``.
        validate: check that every label lies in the vocabulary or equals ``ignore_index``
            (raises ``ValueError``).
        ignore_index: label of tokens to leave out (Hugging Face's, Liger's and verl's -100):
            their ``logp`` and ``entropy`` are 0 and no gradient flows from them.

    Returns:
        ``logp`` float32 ``[N]`` (float64 for float64 inputs on the reference backend), or
        ``(logp, entropy)`` when ``return_entropy``.
    """
    validate_logprobs_inputs(hidden, weight, labels, temperature, vocab_start, tp_group, validate, ignore_index)
    _, impl = _backend.resolve("fused_logprobs", backend, hidden.device)
    local_labels, ignored = shard_labels(labels, vocab_start, ignore_index)
    logp, entropy = _FusedLogprobsFunction.apply(
        hidden, weight, local_labels, ignored, 1.0 / temperature, return_entropy, tp_group, impl
    )
    return (logp, entropy) if return_entropy else logp
