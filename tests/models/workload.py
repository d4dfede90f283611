"""The fixed inputs and loss shared by the single-process and the distributed runs."""

from __future__ import annotations

from typing import Any

import torch

from r1core.batch import MicroBatch

VOCAB = 997


def token_block(seed: int = 0, batch: int = 2, seq: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, seq), generator=gen)


def _micro_batch(sequences: list[torch.Tensor], advantages: list[float]) -> MicroBatch:
    """All positions but the last of each sequence are scored; sample ``b``'s tokens share its
    advantage."""
    width = max(len(s) for s in sequences) - 1
    mask = torch.stack([torch.arange(width) < len(s) - 1 for s in sequences]).float()
    return MicroBatch(sequences, mask, advantages=mask * torch.tensor(advantages)[:, None])


def micro_batches() -> list[MicroBatch]:
    """Two sequences of equal length, then two of different lengths (10 and 6)."""
    block = token_block(1)
    packed = token_block(2, batch=2, seq=10)
    return [
        _micro_batch([block[0], block[1]], [1.0, -0.5]),
        _micro_batch([packed[0], packed[1, :6]], [-1.0, 2.0]),
    ]


def reference_logp(model: Any, mb: MicroBatch) -> torch.Tensor:
    """``[B, W]`` log-probs of ``mb``'s sequences under a transformers causal LM, one
    sequence at a time (zeros past each sequence's end)."""
    out = torch.zeros_like(mb.mask)
    for row, ids in enumerate(mb.input_ids):
        logits = model(ids[None]).logits[0]
        out[row, : len(ids) - 1] = torch.log_softmax(logits, -1)[:-1].gather(-1, ids[1:, None]).squeeze(-1)
    return out


def loss_fn(logp: torch.Tensor, entropy: torch.Tensor | None, mb: MicroBatch):
    """A policy-gradient-shaped loss: -(A * logp) token mean, minus a small entropy bonus."""
    device = logp.device
    mask = mb.mask.to(device)
    pg = -(logp * mb.advantages.to(device) * mask).sum() / mask.sum()
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
        if policy.shape.tied_embeddings and name == "output_layer.weight":
            continue
        for hf_name, full in gather_param(name, param.grad, policy.ctx):
            grads[hf_name] = full.clone()
    out["grads"] = grads
    out["logp_after"] = policy.logprobs(block)
    return out
