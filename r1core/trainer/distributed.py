"""The RL loop's own collectives and metric reduction over data-parallel replicas.

Where ranks sit and the generic collectives are :mod:`r1core.parallel.topology`; this module
holds what only the trainer needs: each micro-batch's share of the global loss, the batch
split check of a run, and how one step's metrics of every replica become the run's.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from r1core.batch import MicroBatch
from r1core.parallel.topology import Topology


def global_loss_scales(denominators: Sequence[float], topology: "Topology") -> list[float]:
    """Factors for the micro-batch losses of one optimiser step, so that the step minimises
    the loss of the whole global batch.

    ``Policy.train_step`` minimises the mean of its micro-batch losses, and data parallelism
    averages the replicas' gradients. When each micro-batch loss is a ratio
    ``numerator_i / denominator_i`` (a token-mean over its own tokens, say), that mean of
    means weights a token of a short micro-batch (or replica) more than one of a long one.
    Multiplying loss ``i`` by ``denominator_i * num_micro * dp_size / total`` (``total``
    summed over the micro-batches of every replica: one all-reduce) turns it into
    ``sum(numerators) / total``, as if the global batch were one micro-batch. Collective over
    the data-parallel group: every replica calls it once per optimiser step.
    """
    total = float(sum(denominators))
    total = topology.dp_all_reduce(total, op="sum")
    factor = len(denominators) * topology.dp_size
    return [d * factor / total if total > 0 else 0.0 for d in denominators]


def set_loss_scales(micro_batches: Sequence[MicroBatch], denominators: Sequence[Any], topology: Topology) -> None:
    """Set each micro-batch's ``loss_scale`` from its aggregation denominator (its response
    tokens for a token-mean, its rows for a sequence-mean; see :func:`global_loss_scales`).
    Collective over the data-parallel group."""
    scales = global_loss_scales([float(d) for d in denominators], topology)
    for micro, scale in zip(micro_batches, scales):
        micro.loss_scale = scale


# ---------------------------------------------------------------------- metric reduction


def mean_metrics(steps: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each metric's mean over ``steps`` (dicts of scalar tensors or numbers, the keys of
    the first), as floats, with one device-to-host transfer: the values are stacked on the
    device that holds any of them (a GPU's loss beside a CPU learning rate)."""
    if not steps:
        raise ValueError("no metrics to average")
    keys = list(steps[0])
    columns = [[torch.as_tensor(step[key]).float().reshape(()) for step in steps] for key in keys]
    device = next((v.device for column in columns for v in column if v.device.type != "cpu"), torch.device("cpu"))
    means = torch.stack([torch.stack([v.to(device) for v in column]).mean() for column in columns])
    return dict(zip(keys, means.tolist()))


#: Counts that add up over replicas.
SUMMED = frozenset({"num_samples", "train_tokens", "reward_failures", "dynamic_sampling/groups_dropped",
                    "dynamic_sampling/groups_kept"})
#: Values every replica shares or whose worst case matters (wall times: the slowest replica
#: sets the step time).
MAXED = frozenset({"dynamic_sampling/rounds", "grad_norm", "lr"})
#: Means over the same number of samples on every replica (the first generation round).
UNWEIGHTED = frozenset({"reward_mean_all"})


def reduce_step_metrics(per_rank: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One step's metrics for the whole run from each data-parallel replica's own.

    Rules, by name: counts in :data:`SUMMED` add up; ``*_max``, wall times (``*_s``) and
    :data:`MAXED` take the maximum; ``reward_std`` is the pooled standard deviation (from each
    replica's mean, std and ``num_samples``); ``tokens_per_second`` is the global token count
    over the slowest replica's step time; every other value is a mean of the replicas' means
    weighted by their ``num_samples`` (plain mean when a replica does not report it, and for
    :data:`UNWEIGHTED`).
    """
    if not per_rank:
        raise ValueError("no metrics to reduce")
    if len(per_rank) == 1:
        return dict(per_rank[0])
    keys = list(per_rank[0])
    for index, metrics in enumerate(per_rank[1:], start=1):
        if set(metrics) != set(keys):
            raise ValueError(f"replica {index} reports metrics {sorted(set(metrics) ^ set(keys))} differently from replica 0")
    counts = [float(m.get("num_samples", 1.0)) for m in per_rank]
    total = sum(counts)
    out: dict[str, float] = {}
    for key in keys:
        values = [float(m[key]) for m in per_rank]
        if key in SUMMED:
            out[key] = sum(values)
        elif key in MAXED or key.endswith("_max") or key.endswith("_s"):
            out[key] = max(values)
        elif key in UNWEIGHTED or total <= 0:
            out[key] = sum(values) / len(values)
        else:
            out[key] = sum(v * c for v, c in zip(values, counts)) / total
    if "reward_std" in keys and "reward_mean" in keys and "num_samples" in keys:
        out["reward_std"] = _pooled_std(
            [float(m["reward_mean"]) for m in per_rank], [float(m["reward_std"]) for m in per_rank], counts
        )
    if "tokens_per_second" in keys and "train_tokens" in out and out.get("step_s", 0.0) > 0:
        out["tokens_per_second"] = out["train_tokens"] / out["step_s"]
    return out


def _pooled_std(means: Sequence[float], stds: Sequence[float], counts: Sequence[float]) -> float:
    """Unbiased standard deviation of the union of samples given each part's mean, unbiased
    std and size (parts of size <= 1 report std 0)."""
    total = sum(counts)
    if total <= 1:
        return 0.0
    grand = sum(m * n for m, n in zip(means, counts)) / total
    squares = sum((n - 1) * s * s + n * (m - grand) ** 2 for m, s, n in zip(means, stds, counts))
    return math.sqrt(max(squares, 0.0) / (total - 1))


