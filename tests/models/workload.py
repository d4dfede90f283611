"""The fixed inputs and loss shared by the single-process and the distributed runs."""

from __future__ import annotations

from typing import Any

import torch

VOCAB = 997


def token_block(seed: int = 0, batch: int = 2, seq: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, seq), generator=gen)


def micro_batches() -> list[dict[str, Any]]:
    """One padded block and one packed pair of sequences of different lengths."""
    block = token_block(1)
    packed = token_block(2, batch=2, seq=10)
    return [
        {"input_ids": block, "advantages": torch.tensor([1.0, -0.5])},
        {"input_ids": packed, "lengths": torch.tensor([10, 6]), "advantages": torch.tensor([-1.0, 2.0])},
    ]


def loss_fn(logp: torch.Tensor, entropy: torch.Tensor | None, mb: dict[str, Any]):
    """A policy-gradient-shaped loss: -(A * logp) token mean, minus a small entropy bonus."""
    batch, steps = logp.shape
    device = logp.device
    if "lengths" in mb:
        mask = torch.arange(steps, device=device)[None, :] < (mb["lengths"].to(device)[:, None] - 1)
    else:
        mask = torch.ones(batch, steps, dtype=torch.bool, device=device)
    mask = mask.float()
    pg = -(logp * mb["advantages"].to(device)[:, None] * mask).sum() / mask.sum()
    ent = (entropy * mask).sum() / mask.sum() if entropy is not None else torch.zeros((), device=device)
    return pg - 0.01 * ent, {"entropy": ent.detach(), "pg": pg.detach()}


def run(policy, out: dict[str, Any]) -> dict[str, Any]:
    """Log-probs (padded and packed), one train step, gathered gradients, log-probs after."""
    from r1core.models.weights import gather_param

    block = token_block(0)
    out["logp"] = policy.logprobs(block)
    out["logp_packed"] = policy.logprobs(block, lengths=torch.tensor([12, 7]))
    logp, ent = policy.logprobs(block, return_entropy=True, temperature=0.7)
    out["logp_t"], out["entropy_t"] = logp, ent
    metrics = policy.train_step(micro_batches(), loss_fn, return_entropy=True)
    out["metrics"] = {k: v.detach().clone() for k, v in metrics.items()}
    grads = {}
    for name, param in policy.model.named_parameters():
        if policy.spec.tie_word_embeddings and name == "output_layer.weight":
            continue
        for hf_name, full in gather_param(name, param.grad, policy.ctx):
            grads[hf_name] = full.clone()
    out["grads"] = grads
    out["logp_after"] = policy.logprobs(block)
    return out
