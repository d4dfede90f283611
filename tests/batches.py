"""Small :class:`~r1core.batch.RolloutBatch` objects for tests, built from per-group rows."""

from __future__ import annotations

import torch

from r1core.batch import RolloutBatch


def rollout_batch(rewards, uids=None, lengths=None, truncated=None, scores=None, first_group=0) -> RolloutBatch:
    """``G`` groups from ``rewards`` (a ``G x n`` nested list); response ``j`` of group ``g``
    is ``lengths[g][j]`` tokens of id ``g`` (10 by default) after a one-token prompt ``[g]``."""
    rewards_t = torch.tensor(rewards, dtype=torch.float32)
    num_groups, size = rewards_t.shape
    uids = list(range(first_group, first_group + num_groups)) if uids is None else list(uids)
    lengths = lengths if lengths is not None else [[10] * size for _ in range(num_groups)]
    truncated_t = (torch.tensor(truncated, dtype=torch.bool) if truncated is not None
                   else torch.zeros(num_groups, size, dtype=torch.bool))
    responses = [[g] * n for g, row in enumerate(lengths) for n in row]
    return RolloutBatch(
        size, [[g] for g in range(num_groups)], uids, [str(u) for u in uids],
        torch.arange(first_group, first_group + num_groups), responses,
        [torch.zeros(len(r)) for r in responses], rewards_t.flatten(), truncated_t.flatten(),
        scores=None if scores is None else torch.tensor(scores, dtype=torch.float32).flatten(),
    )
