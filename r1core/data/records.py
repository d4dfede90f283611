"""The typed record every loader and synthetic task produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One verifiable problem.

    id: unique within its dataset (``"gsm8k/test/17"``, ``"aime24/60"``...).
    problem: the question text shown to the model (before any prompt template).
    answer: the gold final answer as a string, ready for a reward function
        ``(responses, golds) -> rewards``.
    meta: anything else from the source row (solution, subject, level, url...).
    system: the row's own system prompt (a chat template shows it instead of
        ``data.system_prompt``), or None.
    """

    id: str
    problem: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)
    system: str | None = None


class DataFormatError(ValueError):
    """Data that cannot be used: a malformed row, an empty file, an unknown benchmark, no
    prompt left after filtering. The message names the file and the line (row) when there is
    one; the ``r1core`` command reports it in one line with exit status 2."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason
