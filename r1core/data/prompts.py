"""Problems -> prompt token ids, and the length budgets of a run.

One engine serves every prompt of a run, so its context (``max_model_len``) must hold the
longest prompt kept plus the response budget, and may not exceed the model's positions.
:func:`plan_lengths` decides the prompt budget and the engine length from those numbers;
:func:`encode_problems` renders and tokenises; :meth:`EncodedProblems.within` drops the
prompts over the budget (counted, never fatal: one long problem must not stop a run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from r1core.data.records import Problem
from r1core.data.templates import ChatTemplate, PromptTemplate


@dataclass(frozen=True)
class EncodedProblems:
    """Problems with their prompt token ids (same order, same length)."""

    problems: list[Problem]
    tokens: list[list[int]]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.problems)

    @property
    def longest(self) -> int:
        """Tokens of the longest prompt (0 when empty)."""
        return max((len(t) for t in self.tokens), default=0)

    def within(self, budget: int) -> tuple["EncodedProblems", int]:
        """The problems whose prompt has at most ``budget`` tokens, and how many were dropped."""
        keep = [i for i, t in enumerate(self.tokens) if len(t) <= budget]
        kept = EncodedProblems([self.problems[i] for i in keep], [self.tokens[i] for i in keep],
                               [self.texts[i] for i in keep])
        return kept, len(self) - len(keep)


def encode_problems(problems: Sequence[Problem], template: PromptTemplate, tokenizer: Any) -> EncodedProblems:
    """Render each problem with ``template`` (a row's own system prompt passed on) and
    tokenise it. A chat template writes the model's special tokens into the text itself, so
    the tokenizer adds none; other templates get the tokenizer's usual ones (a BOS)."""
    add_special = not isinstance(template, ChatTemplate)
    texts = [template(p.problem, system=p.system) for p in problems]
    tokens = [tokenizer.encode(text, add_special_tokens=add_special) for text in texts]
    return EncodedProblems(list(problems), tokens, texts)


@dataclass(frozen=True)
class LengthPlan:
    """prompt_budget: longest prompt kept (tokens). max_model_len: the engine's context.
    note: a sentence for the log when the engine length was raised or prompts are cut by
    the model's positions (None otherwise)."""

    prompt_budget: int
    max_model_len: int
    note: str | None = None


def plan_lengths(
    *,
    longest_prompt: int,
    response_budget: int,
    configured_max_model_len: int,
    model_positions: int | None,
    max_prompt_tokens: int = 0,
) -> LengthPlan:
    """The prompt budget and engine length of a run.

    longest_prompt: tokens of the longest prompt of the data.
    response_budget: the largest generation budget (training and evaluation).
    configured_max_model_len: ``rollout.max_model_len``: kept when large enough, raised to
        ``prompt budget + response budget`` when not.
    model_positions: the model's ``max_position_embeddings`` (None: unknown, no cap).
    max_prompt_tokens: ``data.max_prompt_tokens`` (0: the longest prompt).

    Raises ``ValueError`` when the response budget leaves no room for a prompt within the
    model's positions.
    """
    if response_budget < 1:
        raise ValueError(f"the response budget must be >= 1 token, got {response_budget}")
    budget = max_prompt_tokens if max_prompt_tokens > 0 else longest_prompt
    notes = []
    if model_positions is not None:
        room = model_positions - response_budget
        if room < 1:
            raise ValueError(
                f"the response budget ({response_budget} tokens: trainer.max_response_tokens or eval.max_tokens) "
                f"leaves no room for a prompt in the model's {model_positions} positions"
            )
        if budget > room:
            notes.append(f"prompts are cut at {room} tokens: the model has {model_positions} positions and the "
                         f"response budget is {response_budget}")
            budget = room
    needed = budget + response_budget
    engine = configured_max_model_len
    if needed > engine:
        notes.append(f"rollout.max_model_len raised from {engine} to {needed} (prompt budget {budget} + response "
                     f"budget {response_budget})")
        engine = needed
    if model_positions is not None and engine > model_positions:
        engine = model_positions
    return LengthPlan(budget, engine, "; ".join(notes) or None)
