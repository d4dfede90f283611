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
(``batch = 1``) is the packed token order.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Callable, Iterator, Optional, Sequence

import torch


class LayerRoutingReplay:
    """Record/replay state of one MoE router.

    mode: ``None`` (route normally), ``"record"`` (route normally and keep the chosen indices,
    one entry per forward call) or ``"replay"`` (use queued indices, one entry per forward call).
    """

    def __init__(self) -> None:
        self.mode: Optional[str] = None
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
            return scores.gather(1, indices), indices
        values, indices = default_compute_topk(scores, topk, num_groups=num_groups, group_topk=group_topk)
        if self.mode == "record":
            self.recorded.append(indices.detach().clone())
        return values, indices

    def clear(self) -> None:
        self.mode = None
        self.recorded = []
        self.targets = deque()


def find_replays(model: torch.nn.Module) -> list[LayerRoutingReplay]:
    """Replay objects of every MoE router in ``model``, in layer order."""
    found = []
    for module in model.modules():
        replay = getattr(module, "router_replay", None)
        if isinstance(replay, LayerRoutingReplay):
            found.append(replay)
    return found


class RoutingReplay:
    """Record or replay the expert choices of all MoE layers of one model (this rank's stage).

    >>> replay = RoutingReplay(model)
    >>> with replay.record() as routes:      # routes[layer][call] -> int64 [N, k]
    ...     model(...)
    >>> with replay.replay([r[0] for r in routes]):
    ...     model(...)                       # same experts, fresh gate probabilities
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.layers = find_replays(model)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @contextlib.contextmanager
    def record(self) -> Iterator[list[list[torch.Tensor]]]:
        """Yield a list per MoE layer that fills with ``int64 [N, k]`` indices, one per forward."""
        routes: list[list[torch.Tensor]] = [[] for _ in self.layers]
        for layer, store in zip(self.layers, routes):
            layer.clear()
            layer.mode = "record"
            layer.recorded = store
        try:
            yield routes
        finally:
            for layer in self.layers:
                layer.mode = None
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
            layer.clear()
            layer.mode = "replay"
            if isinstance(layer_routes, torch.Tensor):
                layer_routes = [layer_routes]
            layer.targets = deque(layer_routes)
        try:
            yield
        finally:
            for layer in self.layers:
                layer.clear()
