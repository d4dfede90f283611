"""MoE routing replay: record the experts each token was sent to, replay them later.

In MoE reinforcement learning the rollout engine and the trainer can pick different experts for
the same token (numerics differ a little, and the top-k choice is discontinuous), which makes
importance ratios explode. Replaying the rollout's choices in the training forward keeps the
two policies on the same experts; the gate probabilities of the replayed experts are still
computed (and differentiated) by the trainer's router.

:class:`LayerRoutingReplay` sits in each router (Megatron's ``router_replay`` hook of
``topk_routing_with_score_function``); :class:`RoutingReplay` drives all layers of a model.
Indices are ``int64 [num_tokens, top_k]`` in the router's token order: Megatron's ``[s, b]``
activations flattened sequence-major (``token = s * batch + b``), which for packed input
(``batch = 1``) is the packed token order. A row of ``-1`` routes that token freely (the
router's own top-k), e.g. positions the rollout engine never ran.

Rollout routing replay (R3) gives routes per sample: :func:`pack_sample_routes` lays them out
for one packed forward, in the order ``Policy.make_batch`` packs the sequences.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Callable, Iterator, Optional, Sequence

import torch


class LayerRoutingReplay:
    """Record/replay state of one MoE router.

    mode: ``None`` (route freely) or ``"replay"`` (use queued indices, one entry per forward
    call). With ``recording`` the indices actually used are kept, one entry per forward call
    (in replay mode too: what a test compares against the rollout's choices).
    """

    def __init__(self) -> None:
        self.mode: Optional[str] = None
        self.recording = False
        self.recorded: list[torch.Tensor] = []
        self.targets: deque[torch.Tensor] = deque()

    def get_replay_topk(
        self,
        scores: torch.Tensor,
        topk: int,
        num_groups: Optional[int] = None,
        group_topk: Optional[int] = None,
        default_compute_topk: Optional[Callable] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Megatron's hook: return ``(selected_scores [N, k], indices [N, k])``."""
        if self.mode == "replay":
            if not self.targets:
                raise RuntimeError("routing replay: no recorded indices left for this forward")
            indices = self.targets.popleft().to(device=scores.device, dtype=torch.long)
            if indices.shape != (scores.shape[0], topk):
                raise ValueError(
                    f"routing replay: indices of shape {tuple(indices.shape)} do not fit "
                    f"{scores.shape[0]} tokens x top-{topk}"
                )
            free = indices < 0
            if bool(free.any()):  # host sync: only for batches with unrouted positions
                _, own = default_compute_topk(scores, topk, num_groups=num_groups, group_topk=group_topk)
                indices = torch.where(free, own, indices)
            values = scores.gather(1, indices)
        else:
            values, indices = default_compute_topk(scores, topk, num_groups=num_groups, group_topk=group_topk)
        if self.recording:
            self.recorded.append(indices.detach().clone())
        return values, indices

    def clear(self) -> None:
        self.mode = None
        self.recording = False
        self.recorded = []
        self.targets = deque()


def find_replays(model: torch.nn.Module) -> list[tuple[int, LayerRoutingReplay]]:
    """``(layer index within this stage, replay)`` of every MoE router in ``model``, in order."""
    found = []
    for name, module in model.named_modules():
        replay = getattr(module, "router_replay", None)
        if isinstance(replay, LayerRoutingReplay):
            parts = name.split(".")
            layer = int(parts[parts.index("layers") + 1]) if "layers" in parts else len(found)
            found.append((layer, replay))
    return found


def pack_sample_routes(routes: Sequence[torch.Tensor], lengths: Sequence[int], moe_layers: Sequence[int], *,
                       top_k: int, total_tokens: int) -> list[torch.Tensor]:
    """Per-sample routes -> one ``int64 [total_tokens, top_k]`` tensor per MoE layer in
    ``moe_layers``, in pack order.

    ``routes[i]``: integer ``[positions_i, num_moe_layers, top_k]`` for sample ``i`` of
    ``lengths[i]`` tokens (``positions_i <= lengths[i]``: a rollout engine never runs a sample's
    last token); ``moe_layers`` selects columns of its second axis. Positions not given, and the
    padding up to ``total_tokens``, are ``-1`` (routed freely).
    """
    if len(routes) != len(lengths):
        raise ValueError(f"routing replay: {len(routes)} routes for {len(lengths)} sequences")
    packed = torch.full((total_tokens, len(moe_layers), top_k), -1, dtype=torch.long)
    start = 0
    for index, (sample, length) in enumerate(zip(routes, lengths)):
        sample = torch.as_tensor(sample)
        if sample.dim() != 3 or sample.shape[2] != top_k or sample.shape[0] > length:
            raise ValueError(
                f"routing replay: routes of sample {index} have shape {tuple(sample.shape)}; expected "
                f"[<= {length} positions, MoE layers, top_k={top_k}]"
            )
        if max(moe_layers, default=-1) >= sample.shape[1]:
            raise ValueError(
                f"routing replay: routes of sample {index} cover {sample.shape[1]} MoE layers, the model "
                f"has more (layer {max(moe_layers)})"
            )
        packed[start : start + sample.shape[0]] = sample[:, list(moe_layers)].long()
        start += length
    return [packed[:, column] for column in range(len(moe_layers))]


class RoutingReplay:
    """Record or replay the expert choices of all MoE layers of one model (this rank's stage).

    >>> replay = RoutingReplay(model)
    >>> with replay.record() as routes:      # routes[layer][call] -> int64 [N, k]
    ...     model(...)
    >>> with replay.replay([r[0] for r in routes]):
    ...     model(...)                       # same experts, fresh gate probabilities
    """

    def __init__(self, model: torch.nn.Module) -> None:
        found = find_replays(model)
        self.layer_indices = [index for index, _ in found]
        """Index within this stage's layers of each MoE layer."""
        self.layers = [replay for _, replay in found]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @contextlib.contextmanager
    def record(self) -> Iterator[list[list[torch.Tensor]]]:
        """Yield a list per MoE layer that fills with the ``int64 [N, k]`` indices used, one per
        forward (replayed ones too, when nested inside :meth:`replay`)."""
        routes: list[list[torch.Tensor]] = [[] for _ in self.layers]
        for layer, store in zip(self.layers, routes):
            layer.recording = True
            layer.recorded = store
        try:
            yield routes
        finally:
            for layer in self.layers:
                layer.recording = False
                layer.recorded = []

    @contextlib.contextmanager
    def replay(self, routes: Sequence[torch.Tensor | Sequence[torch.Tensor]]) -> Iterator[None]:
        """Replay ``routes``: one entry per MoE layer, each an ``int64 [N, k]`` tensor (one
        forward) or a sequence of them (consumed one per forward, e.g. per micro-batch)."""
        if len(routes) != len(self.layers):
            raise ValueError(
                f"routing replay: got routes for {len(routes)} MoE layers, the model has {len(self.layers)}"
            )
        for layer, layer_routes in zip(self.layers, routes):
            layer.mode = "replay"
            if isinstance(layer_routes, torch.Tensor):
                layer_routes = [layer_routes]
            layer.targets = deque(layer_routes)
        try:
            yield
        finally:
            for layer in self.layers:
                layer.mode = None
                layer.targets = deque()
