"""r1core's rewards in other trainers' conventions: TRL reward functions and verl's compute_score.

TRL (``GRPOTrainer(reward_funcs=[...])``) calls each reward function as
``f(prompts=..., completions=..., completion_ids=..., **columns)``, where ``columns`` are the
dataset's other columns (one value per completion) plus ``trainer_state``, ``log_extra`` and
``log_metric``; it names the function by ``__name__`` and wants one float (or None) per
completion. Completions are strings, or, for conversational datasets, lists of
``{"role": ..., "content": ...}`` messages (content a string or a list of parts).

Every registered reward already accepts that call (``math_accuracy``, ``r1_format``,
``get_reward(...)``): the gold is the first of ``GOLD_COLUMNS`` present; ``trl_reward`` names the
column explicitly. verl calls ``compute_score(data_source, solution_str, ground_truth,
extra_info=None)`` per sample (``custom_reward_function.path`` = this file, ``.name`` =
``compute_score``) and returns a float; ``verl_compute_score`` builds one for any reward.

Every call goes through the default pool of ``r1core.rewards.pool``: bounded in time per sample,
whatever the answer does to sympy or the sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from r1core.rewards.calls import GOLD_COLUMNS, completion_text, trl_inputs
from r1core.rewards.registry import BoundReward, call_reward, get_reward

__all__ = ["GOLD_COLUMNS", "completion_text", "trl_inputs", "trl_reward", "verl_compute_score"]

class TRLReward:
    """A reward in TRL's convention with an explicit gold column (see ``trl_reward``)."""

    def __init__(self, reward: BoundReward, gold_column: str | None, name: str) -> None:
        self.reward, self.gold_column = reward, gold_column
        self.__name__ = self.__qualname__ = name

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        kwargs["completions"] = completions
        return call_reward(self.reward.spec, (), kwargs, config=self.reward.config, gold_column=self.gold_column)

    def __repr__(self) -> str:
        return f"TRLReward({self.__name__!r}, gold_column={self.gold_column!r})"


def trl_reward(reward: str | BoundReward, gold_column: str | None = None, name: str | None = None,
               **config: Any) -> TRLReward:
    """A TRL reward function for a registered reward, e.g.
    ``GRPOTrainer(reward_funcs=[trl_reward("math_accuracy", gold_column="solution"),
    trl_reward("r1_format", allow_missing_think_open=True)], ...)``.

    Args:
        reward: registered name (``config`` fields are bound) or a ``get_reward(...)`` result.
        gold_column: dataset column holding the gold answer (default: the first of
            ``GOLD_COLUMNS`` in the call; rewards that need no gold ignore it).
        name: ``__name__`` TRL logs the reward under (default: the registered name).
    Returns:
        ``f(completions, **kwargs) -> list[float]``, one score per completion.
    """
    bound = get_reward(reward, **config) if isinstance(reward, str) else reward
    if config and not isinstance(reward, str):
        raise TypeError("config fields go with a reward name, not with a bound reward")
    if not isinstance(bound, BoundReward):
        raise TypeError(f"trl_reward takes a registered name or a get_reward() result, got {reward!r}")
    return TRLReward(bound, gold_column, name or bound.name)


# ----------------------------------------------------------------------------- verl

def _verl_gold(ground_truth: Any) -> str:
    if isinstance(ground_truth, str):
        return ground_truth
    if isinstance(ground_truth, Mapping) or isinstance(ground_truth, list):
        return json.dumps(ground_truth)  # e.g. code tests: {"stdio": [...], "asserts": [...]}
    return "" if ground_truth is None else str(ground_truth)


def verl_compute_score(
    reward: str | BoundReward = "math_accuracy",
    by_data_source: Mapping[str, str | BoundReward] | None = None,
    **config: Any,
) -> Callable[..., float]:
    """A verl ``compute_score(data_source, solution_str, ground_truth, extra_info=None)``.

    Args:
        reward: the reward for every data source not in ``by_data_source`` (a registered name,
            with ``config`` fields bound, or a ``get_reward(...)`` result).
        by_data_source: data source name -> reward, for mixed datasets (math and code).
    The returned function scores one sample (float); its ``batch`` attribute scores lists
    (``data_sources, solution_strs, ground_truths, extra_infos``) in one pool call, as verl's
    batch reward manager calls it. Non-string ground truths (dicts of code tests) are JSON-encoded.
    """
    default = get_reward(reward, **config) if isinstance(reward, str) else reward
    table = {source: get_reward(value) if isinstance(value, str) else value
             for source, value in (by_data_source or {}).items()}

    def batch(data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence[Any],
              extra_infos: Sequence[Any] | None = None) -> list[float]:
        if not len(data_sources) == len(solution_strs) == len(ground_truths):
            raise ValueError("data_sources, solution_strs and ground_truths differ in length")
        scores = [0.0] * len(solution_strs)
        groups: dict[int, list[int]] = {}
        rewards: dict[int, BoundReward] = {}
        for index, source in enumerate(data_sources):
            chosen = table.get(source, default)
            groups.setdefault(id(chosen), []).append(index)
            rewards[id(chosen)] = chosen
        for key, indices in groups.items():
            values = rewards[key]([solution_strs[i] for i in indices], [_verl_gold(ground_truths[i]) for i in indices])
            for index, value in zip(indices, values):
                scores[index] = float(value)
        return scores

    def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None) -> float:
        return batch([data_source], [solution_str], [ground_truth])[0]

    compute_score.batch = batch  # type: ignore[attr-defined]
    return compute_score


compute_score = verl_compute_score()
"""verl's default entry point here: ``math_accuracy`` of ``solution_str`` against ``ground_truth``."""
