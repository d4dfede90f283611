"""Reward registry and weighted composition.

Every reward has one signature, ``(responses: list[str], golds: list[str]) -> list[float]``.
A reward with parameters is written as ``fn(responses, golds, config=Config())`` and
registered with its config dataclass; ``get_reward(name, **fields)`` binds a config and
returns a plain two-argument callable (a ``functools.partial``, so it pickles by reference and
can be sent to the worker processes of ``RewardPool``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from r1core._registry import Registry

RewardFn = Callable[[list[str], list[str]], list[float]]
"""A batch reward: responses and golds of equal length in, one float per response out."""


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward: its function and the dataclass holding its parameters (or None)."""

    name: str
    fn: Callable[..., list[float]]
    config_cls: type | None


REWARDS: Registry[RewardSpec] = Registry("reward")


def register_reward(
    name: str, config: type | None = None
) -> Callable[[Callable[..., list[float]]], Callable[..., list[float]]]:
    """Decorator registering ``fn`` under ``name``; ``config`` is its parameter dataclass.
    Registering a name twice raises ValueError."""
    if config is not None and not dataclasses.is_dataclass(config):
        raise TypeError(f"reward {name!r}: config must be a dataclass, got {config!r}")

    def decorator(fn: Callable[..., list[float]]) -> Callable[..., list[float]]:
        REWARDS.register(name)(RewardSpec(name, fn, config))
        return fn

    return decorator


def list_rewards() -> list[str]:
    """Names of all registered rewards, sorted."""
    _ensure_builtin_rewards()
    return REWARDS.names()


def _ensure_builtin_rewards() -> None:
    # Importing the package registers the built-in rewards (each module registers its own).
    import r1core.rewards  # noqa: F401


def get_reward_spec(name: str) -> RewardSpec:
    """The ``RewardSpec`` registered under ``name``; a KeyError lists the valid names."""
    _ensure_builtin_rewards()
    return REWARDS.get(name)


def get_reward(name: str, **config: Any) -> RewardFn:
    """The reward ``name`` with its config fields bound, as a two-argument batch callable.

    Example: ``get_reward("overlong_penalty", max_length=4096, buffer=512)``. Unknown fields
    raise a TypeError naming the valid ones.
    """
    spec = get_reward_spec(name)
    if spec.config_cls is None:
        if config:
            raise TypeError(f"reward {name!r} takes no config, got {sorted(config)}")
        return spec.fn
    valid = {field.name for field in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise TypeError(
            f"reward {name!r}: unknown config field(s) {unknown}; valid fields: {sorted(valid)}"
        )
    return functools.partial(spec.fn, config=spec.config_cls(**config))


@dataclass(frozen=True)
class RewardComponent:
    """One term of a composite reward: ``weight * reward(responses, golds)``."""

    name: str
    weight: float
    reward: RewardFn


class CompositeReward:
    """Weighted sum of named rewards that also reports every component.

    ``composite(responses, golds)`` returns the totals (a ``RewardFn`` like any other);
    ``composite.score(responses, golds)`` returns ``(totals, {name: unweighted scores})`` so the
    trainer can log each component. ``RewardPool.score_composite`` runs the components in
    worker processes with per-sample timeouts.
    """

    def __init__(self, components: list[RewardComponent]) -> None:
        if not components:
            raise ValueError("a composite reward needs at least one component")
        names = [component.name for component in components]
        if len(set(names)) != len(names):
            raise ValueError(f"composite reward component names must be unique, got {names}")
        self.components = list(components)

    def combine(self, component_scores: Mapping[str, list[float]]) -> list[float]:
        """Weighted sum of per-component scores (each a list of floats, one per response)."""
        lengths = {len(scores) for scores in component_scores.values()}
        if len(lengths) != 1:
            raise ValueError(f"component score lists differ in length: {sorted(lengths)}")
        (length,) = lengths
        totals = [0.0] * length
        for component in self.components:
            scores = component_scores[component.name]
            for index, value in enumerate(scores):
                totals[index] += component.weight * value
        return totals

    def score(
        self, responses: list[str], golds: list[str]
    ) -> tuple[list[float], dict[str, list[float]]]:
        """In-process scoring: (weighted totals, unweighted scores per component name)."""
        _check_batch(responses, golds)
        parts = {c.name: list(c.reward(responses, golds)) for c in self.components}
        return self.combine(parts), parts

    def __call__(self, responses: list[str], golds: list[str]) -> list[float]:
        return self.score(responses, golds)[0]


def compose_rewards(
    weights: Mapping[str, float], configs: Mapping[str, Mapping[str, Any]] | None = None
) -> CompositeReward:
    """Build a ``CompositeReward`` from registered names, e.g.
    ``compose_rewards({"math_accuracy": 1.0, "r1_format": 0.5},
    configs={"r1_format": {"allow_missing_think_open": True}})``."""
    configs = dict(configs or {})
    stray = sorted(set(configs) - set(weights))
    if stray:
        raise ValueError(f"configs given for rewards not in the weights: {stray}")
    components = [
        RewardComponent(name, float(weight), get_reward(name, **configs.get(name, {})))
        for name, weight in weights.items()
    ]
    return CompositeReward(components)


def _check_batch(responses: list[str], golds: list[str]) -> None:
    if len(responses) != len(golds):
        raise ValueError(
            f"responses and golds differ in length: {len(responses)} vs {len(golds)}"
        )
