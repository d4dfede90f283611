"""Input factories of the op tests and of the benchmarks in ``perf/``.

Values are scaled like a trained model's: hidden states of unit RMS, LM-head rows of norm
~1/sqrt(H) times a logit scale, so softmaxes are neither uniform nor one-hot.
"""

from __future__ import annotations

import torch


def make_logprobs_inputs(
    num_tokens: int,
    hidden_size: int,
    vocab_size: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    logit_scale: float = 4.0,
    requires_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``hidden [N, H]``, ``weight [V, H]`` in ``dtype`` and ``labels`` int64 ``[N]``.

    Half of the labels are the argmax token (as sampled tokens often are), half uniform.
    """
    device = torch.device(device)
    # Drawn where they are used: at the benchmark shape (N=16384, V=151936) choosing the
    # greedy labels is a 2e13-FLOP product, minutes on a CPU. The same seed therefore gives
    # other values on CUDA than on the CPU.
    generator = torch.Generator(device=device).manual_seed(seed)
    draw = dict(generator=generator, device=device)
    hidden = torch.randn(num_tokens, hidden_size, **draw)
    weight = torch.randn(vocab_size, hidden_size, **draw) * (logit_scale / hidden_size**0.5)
    labels = torch.randint(0, vocab_size, (num_tokens,), **draw)
    if num_tokens and vocab_size:
        greedy = torch.rand(num_tokens, **draw) < 0.5
        top = torch.cat([(chunk @ weight.T).argmax(-1) for chunk in hidden.split(1024)])
        labels = torch.where(greedy, top, labels)
    hidden = hidden.to(dtype=dtype).requires_grad_(requires_grad)
    weight = weight.to(dtype=dtype).requires_grad_(requires_grad)
    return hidden, weight, labels


def make_grpo_loss_inputs(
    batch: int,
    length: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    spread: float = 0.3,
    requires_grad: bool = False,
) -> dict[str, torch.Tensor]:
    """``logp, old_logp, ref_logp, rollout_logp`` ``[B, T]``, ``advantages [B]``, bool ``mask``
    ``[B, T]`` (right-padded responses of random lengths, at least one token each).

    ``spread`` sets how far the policies differ, so that some ratios fall outside the clip
    range.
    """
    generator = torch.Generator().manual_seed(seed)
    logp = -torch.rand(batch, length, generator=generator) * 3.0
    old_logp = logp + spread * torch.randn(batch, length, generator=generator)
    ref_logp = logp + spread * torch.randn(batch, length, generator=generator)
    rollout_logp = old_logp + 0.5 * spread * torch.randn(batch, length, generator=generator)
    advantages = torch.randn(batch, generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    out = {
        "logp": logp,
        "old_logp": old_logp.clamp(max=0.0),
        "ref_logp": ref_logp.clamp(max=0.0),
        "rollout_logp": rollout_logp.clamp(max=0.0),
        "advantages": advantages,
    }
    out = {k: v.to(device=device, dtype=dtype) for k, v in out.items()}
    out["logp"].requires_grad_(requires_grad)
    out["mask"] = mask.to(device)
    return out


def make_group_rewards(
    num_groups: int,
    group_size: int,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    binary: bool = True,
) -> torch.Tensor:
    """float32 ``[num_groups * group_size]`` rewards: 0/1 accuracies (some groups all-equal)
    when ``binary``, else Gaussian."""
    generator = torch.Generator().manual_seed(seed)
    if binary:
        pass_rate = torch.rand(num_groups, 1, generator=generator)
        rewards = (torch.rand(num_groups, group_size, generator=generator) < pass_rate).float()
    else:
        rewards = torch.randn(num_groups, group_size, generator=generator)
    return rewards.reshape(-1).to(device)
