"""Reward registry, weighted composition, and the calling conventions every reward accepts.

Every reward has one signature, ``(responses: list[str], golds: list[str]) -> list[float]``.
A reward with parameters is written as ``fn(responses, golds, config=Config())`` and
registered with its config dataclass; ``get_reward(name, **fields)`` binds a config and
returns a named two-argument callable (``BoundReward``) that pickles by reference, so it can be
sent to the worker processes of ``RewardPool``.

Calling a registered reward (the decorated function or a ``BoundReward``) outside a reward
worker is bounded in time: the batch is scored by the process's shared default pool
(``r1core.rewards.pool.default_pool``), one worker process per sample at a time, so a sample
that hangs (a power tower handed to sympy, a program that never ends) scores 0 after the
sample timeout with the same reason the pool gives ("timeout after 10 s"), logged by the
pool. Inside a worker, or under ``scoring_in_process()``, the function runs directly.

The same objects accept TRL's reward-function convention, ``f(prompts=..., completions=...,
**dataset_columns)`` with plain or conversational completions; see ``r1core.rewards.adapters``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from r1core._registry import Registry
from r1core.rewards.calls import RewardFn, check_batch, trl_inputs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward.

    Fields:
        name: registry name (also the ``__name__`` of its callables, as TRL logs it).
        fn: the implementation, called directly (no time bound).
        config_cls: the dataclass holding its parameters, or None.
        needs_gold: whether scores depend on the gold (a TRL call must then pass a gold column).
        time_budget: per-sample seconds a direct call allows, given the config (default: the
            default pool's ``sample_timeout_s``); e.g. a code reward runs several programs.
    """

    name: str
    fn: Callable[..., list[float]]
    config_cls: type | None
    needs_gold: bool = False
    time_budget: Callable[[Any], float] | None = None


REWARDS: Registry[RewardSpec] = Registry("reward")

_local = threading.local()
_in_worker = False


def mark_reward_worker() -> None:
    """Called by reward worker processes: rewards run in-process there (the worker is the bound)."""
    global _in_worker
    _in_worker = True


@contextlib.contextmanager
def scoring_in_process() -> Iterator[None]:
    """Within this block (this thread), rewards run in the calling process, without a time bound."""
    previous = getattr(_local, "in_process", False)
    _local.in_process = True
    try:
        yield
    finally:
        _local.in_process = previous


def _runs_in_process() -> bool:
    return _in_worker or getattr(_local, "in_process", False)


def register_reward(
    name: str, config: type | None = None, *, needs_gold: bool = False,
    time_budget: Callable[[Any], float] | None = None,
) -> Callable[[Callable[..., list[float]]], Callable[..., list[float]]]:
    """Decorator registering ``fn`` under ``name``; ``config`` is its parameter dataclass.

    The decorated name becomes the public, time-bounded reward (see the module docstring);
    ``get_reward_spec(name).fn`` is the undecorated function. Registering a name twice raises
    ValueError.
    """
    if config is not None and not dataclasses.is_dataclass(config):
        raise TypeError(f"reward {name!r}: config must be a dataclass, got {config!r}")

    def decorator(fn: Callable[..., list[float]]) -> Callable[..., list[float]]:
        spec = RewardSpec(name, fn, config, needs_gold, time_budget)
        REWARDS.register(name)(spec)

        @functools.wraps(fn)
        def reward(*args: Any, **kwargs: Any) -> list[float]:
            return call_reward(spec, args, kwargs)

        reward.__name__ = name
        return reward

    return decorator


def call_reward(spec: RewardSpec, args: tuple, kwargs: dict[str, Any], config: Any = None,
                gold_column: str | None = None) -> list[float]:
    """Call ``spec``'s reward with r1core's ``(responses, golds[, config])`` or TRL's keyword
    convention (``gold_column``: see ``r1core.rewards.adapters``); bounded through the default
    pool unless running in-process."""
    if "completions" in kwargs:
        if args:
            raise TypeError(f"reward {spec.name!r}: a TRL-style call passes keywords only, got {len(args)} positional")
        responses, golds = trl_inputs(spec.name, spec.needs_gold, kwargs, gold_column)
    else:
        bound = _bind(spec, args, kwargs)
        responses, golds = bound["responses"], bound["golds"]
        config = bound.get("config", config)
    check_batch(responses, golds)
    if config is None and spec.config_cls is not None:
        config = spec.config_cls()
    if _runs_in_process() or not _loadable_by_workers(spec):
        return spec.fn(responses, golds, config=config) if spec.config_cls is not None else spec.fn(responses, golds)
    result = BoundReward(spec.name, config, _module_of(spec)).score(list(responses), list(golds))
    result.raise_first_error()
    return result.scores


_warned_unbounded: set[str] = set()


def _loadable_by_workers(spec: RewardSpec) -> bool:
    """Whether a worker process can find ``spec`` by importing its module (it was registered
    at import time). Rewards defined in ``__main__`` or inside a function cannot: they run in
    the caller's process, without a time bound, with one warning."""
    module = sys.modules.get(spec.fn.__module__)
    public = getattr(module, spec.fn.__name__, None) if spec.fn.__module__ != "__main__" else None
    if getattr(public, "__wrapped__", None) is spec.fn:
        return True
    if spec.name not in _warned_unbounded:
        _warned_unbounded.add(spec.name)
        logger.warning("reward %r is not importable by reward workers (defined in __main__ or in a function); "
                       "it runs in the calling process without a time bound", spec.name)
    return False


def _bind(spec: RewardSpec, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    names = ["responses", "golds"] + (["config"] if spec.config_cls is not None else [])
    if len(args) > len(names):
        raise TypeError(f"reward {spec.name!r} takes at most {len(names)} positional arguments ({', '.join(names)})")
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names or key in bound:
            raise TypeError(f"reward {spec.name!r}: unexpected or repeated argument {key!r}; it takes "
                            f"({', '.join(names)}) or TRL's keywords (completions=..., prompts=..., columns)")
        bound[key] = value
    missing = [name for name in names[:2] if name not in bound]
    if missing:
        raise TypeError(f"reward {spec.name!r} missing {missing}")
    return bound


def _module_of(spec: RewardSpec) -> str:
    return spec.fn.__module__


class BoundReward:
    """A registered reward with its config bound: ``reward(responses, golds)`` (time-bounded,
    see the module docstring), ``reward.score(...)`` for scores with failure reasons, and TRL's
    keyword convention. Has ``__name__`` (the registry name) and pickles by reference."""

    def __init__(self, name: str, config: Any = None, module: str | None = None) -> None:
        self.name = self.__name__ = self.__qualname__ = name
        self.config = config
        self.module = module

    @property
    def spec(self) -> RewardSpec:
        return get_reward_spec(self.name)

    @property
    def func(self) -> Callable[..., list[float]]:
        """The implementation (``RewardPool`` checks that workers can import it)."""
        return self.spec.fn

    def __call__(self, *args: Any, **kwargs: Any) -> list[float]:
        if "config" in kwargs or len(args) > 2:
            raise TypeError(f"reward {self.name!r} already has its config bound")
        return call_reward(self.spec, args, kwargs, config=self.config)

    def score(self, responses: list[str], golds: list[str]) -> Any:
        """``PoolResult`` (scores and reasons) from the default pool."""
        from r1core.rewards.pool import default_pool

        return default_pool().score(self, responses, golds, sample_timeout_s=self.time_budget())

    def time_budget(self, base_s: float | None = None) -> float:
        """Per-sample seconds this reward gets: ``base_s`` (default: the shared pool's timeout),
        or more if the reward declares it needs more under this config."""
        if base_s is None:
            from r1core.rewards.pool import default_pool

            base_s = default_pool().config.sample_timeout_s
        spec = self.spec
        timeout = base_s
        if spec.time_budget is not None:
            config = self.config if self.config is not None or spec.config_cls is None else spec.config_cls()
            timeout = max(timeout, float(spec.time_budget(config)))
        return timeout

    def __reduce__(self) -> tuple:
        return (_load_bound_reward, (self.module, self.name, self.config))

    def __repr__(self) -> str:
        return f"BoundReward({self.name!r}, {self.config!r})"


def _load_bound_reward(module: str | None, name: str, config: Any) -> BoundReward:
    if module and name not in REWARDS:
        importlib.import_module(module)  # registers a reward defined outside r1core
    return BoundReward(name, config, module)


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


def get_reward(name: str, **config: Any) -> BoundReward:
    """The reward ``name`` with its config fields bound, as a named two-argument callable.

    Example: ``get_reward("overlong_penalty", max_length=4096, buffer=512)``. Unknown fields
    raise a TypeError naming the valid ones.
    """
    spec = get_reward_spec(name)
    if spec.config_cls is None:
        if config:
            raise TypeError(f"reward {name!r} takes no config, got {sorted(config)}")
        return BoundReward(name, None, _module_of(spec))
    valid = {field.name for field in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise TypeError(
            f"reward {name!r}: unknown config field(s) {unknown}; valid fields: {sorted(valid)}"
        )
    return BoundReward(name, spec.config_cls(**config), _module_of(spec))


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
    trainer can log each component. Outside a reward worker both score every component in one
    batch of the default pool (bounded, like any reward); ``RewardPool.score_composite`` does the
    same in a pool of the caller's own.
    """

    def __init__(self, components: list[RewardComponent]) -> None:
        if not components:
            raise ValueError("a composite reward needs at least one component")
        names = [component.name for component in components]
        if len(set(names)) != len(names):
            raise ValueError(f"composite reward component names must be unique, got {names}")
        self.components = list(components)
        self.__name__ = "+".join(names)

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
        """(weighted totals, unweighted scores per component name)."""
        check_batch(responses, golds)
        if _runs_in_process() or not all(isinstance(c.reward, BoundReward) for c in self.components):
            parts = {c.name: list(c.reward(responses, golds)) for c in self.components}
            return self.combine(parts), parts
        from r1core.rewards.pool import default_pool

        timeouts = [component.reward.time_budget() for component in self.components]
        result = default_pool().score_composite(self, list(responses), list(golds), sample_timeout_s=timeouts)
        result.raise_first_error()
        return result.totals, result.components

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
