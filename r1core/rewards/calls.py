"""How reward functions are called: r1core's ``reward(responses, golds)``, and TRL's keyword
convention read into it.

TRL calls ``f(prompts=..., completions=..., completion_ids=..., **columns)``: completions are
strings, or lists of ``{"role", "content"}`` messages for conversational datasets; the gold is one
of the dataset's columns. ``r1core.rewards.registry`` reads such calls with ``trl_inputs``;
``r1core.rewards.adapters`` builds TRL and verl reward functions on top.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

RewardFn = Callable[[list[str], list[str]], list[float]]
"""A reward: one float per (response, gold) pair."""


class WeightedRewards(Protocol):
    """What the reward pool needs of a ``CompositeReward``: named, weighted components and the
    rule that combines their scores."""

    components: Sequence[Any]

    def combine(self, component_scores: Mapping[str, list[float]]) -> list[float]: ...


GOLD_COLUMNS = ("solution", "answer", "ground_truth", "gold", "reference")
"""Dataset columns read as the gold answer, in this order, when a TRL call does not name one."""
_TRL_KEYWORDS = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text":
                texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise TypeError(f"message content must be a string or a list of parts, got {type(content).__name__}")


def completion_text(completion: Any) -> str:
    """The text a reward scores: a plain completion as is; a conversational one (a list of
    messages, or one message) as the concatenated content of its assistant messages."""
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, Mapping) else completion
    if not isinstance(messages, Sequence):
        raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")
    texts = []
    for message in messages:
        if not isinstance(message, Mapping) or "content" not in message:
            raise TypeError(f"conversational completions are lists of {{'role', 'content'}} dicts, got {message!r:.100}")
        if message.get("role", "assistant") == "assistant":
            texts.append(_content_text(message["content"]))
    return "".join(texts)


def trl_inputs(name: str, needs_gold: bool, kwargs: Mapping[str, Any],
               gold_column: str | None = None) -> tuple[list[str], list[str]]:
    """(responses, golds) from TRL's keyword arguments for the reward ``name`` (``needs_gold``:
    whether it refuses a call without a gold column)."""
    completions = kwargs["completions"]
    responses = [completion_text(completion) for completion in completions]
    if gold_column is None:
        gold_column = next((name for name in GOLD_COLUMNS if name in kwargs), None)
    elif gold_column not in kwargs:
        raise TypeError(f"reward {name!r}: the gold column {gold_column!r} is not among the call's columns "
                        f"{sorted(set(kwargs) - _TRL_KEYWORDS)}")
    if gold_column is None:
        if needs_gold:
            raise TypeError(
                f"reward {name!r} needs the gold answers, but none of the columns "
                f"{sorted(set(kwargs) - _TRL_KEYWORDS)} is one of {list(GOLD_COLUMNS)}; "
                f"use trl_reward({name!r}, gold_column=...)")
        return responses, [""] * len(responses)
    values = kwargs[gold_column]
    if len(values) != len(responses):
        raise ValueError(f"column {gold_column!r} has {len(values)} values for {len(responses)} completions")
    golds = [value if isinstance(value, str) else "" if value is None else
             json.dumps(value) if isinstance(value, (Mapping, list)) else str(value) for value in values]
    return responses, golds


def check_batch(responses: list[str], golds: list[str]) -> None:
    """Refuse a call whose responses and golds do not pair up."""
    if len(responses) != len(golds):
        raise ValueError(
            f"responses and golds differ in length: {len(responses)} vs {len(golds)}"
        )
