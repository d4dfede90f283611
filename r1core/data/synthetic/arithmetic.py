"""Multi-step integer arithmetic: ``3+4*2-5=?`` -> ``6``.

The working reduces one operation per line, multiplications first and then left to
right, and rewrites what is left: ``4*2=8, 3+8-5`` / ``3+8=11, 11-5`` / ``11-5=6``. A
model that learns the format from SFT traces still has to carry each step correctly, so
its accuracy depends smoothly on the number of terms and the operand sizes: the
difficulty knob.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from r1core.data.records import Problem
from r1core.data.synthetic.base import SYNTHETIC_TASKS, format_trace
from r1core.rewards.extract import final_answer_tag

_INTEGER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class ArithmeticConfig:
    """num_terms: mean number of operands; a fractional part is the probability of one more
        (2.5 gives 2 or 3 terms half the time each), so difficulty moves in small steps.
    max_operand: operands are drawn uniformly from ``0..max_operand``.
    mul_prob: probability that an operator is ``*`` (the others are ``+``/``-`` evenly).
    max_mul_operand: bound on the operands next to a ``*`` (keeps products small).
    max_terms: 0 lets ``num_terms`` alone set the count. Above it, the count is drawn
        uniformly from ``floor(num_terms)..max_terms``: a set of mixed difficulty whose
        solutions range from a line to many (the working grows with the square of the
        count), so response lengths spread the way a real benchmark's do.
    """

    num_terms: float = 3.0
    max_operand: int = 9
    mul_prob: float = 0.0
    max_mul_operand: int = 9
    max_terms: int = 0

    def __post_init__(self) -> None:
        if not self.num_terms >= 2:
            raise ValueError(f"num_terms must be >= 2, got {self.num_terms}")
        if self.max_terms and self.max_terms < math.floor(self.num_terms):
            raise ValueError(f"max_terms ({self.max_terms}) must be 0 or >= num_terms ({self.num_terms})")
        if self.max_operand < 1 or self.max_mul_operand < 1:
            raise ValueError("max_operand and max_mul_operand must be >= 1")
        if not 0.0 <= self.mul_prob <= 1.0:
            raise ValueError(f"mul_prob must lie in [0, 1], got {self.mul_prob}")

    @classmethod
    def from_difficulty(cls, difficulty: float) -> "ArithmeticConfig":
        """Map ``difficulty`` in [0, 1] monotonically: 2 -> 5 terms, operands up to 9 -> 99,
        multiplication from never to 40 % of operators."""
        if not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty must lie in [0, 1], got {difficulty}")
        return cls(
            num_terms=2.0 + 3.0 * difficulty,
            max_operand=int(round(9 + 90 * difficulty**2)),
            mul_prob=0.4 * difficulty,
        )


def _render(tokens: list) -> str:
    return "".join(str(t) for t in tokens)


def solve_with_steps(tokens: list) -> tuple[int, list[str]]:
    """Evaluate ``[n0, op0, n1, ...]`` (ops ``+ - *``) with the usual precedence.

    Returns the value and one working line per operation: ``a op b = c`` followed by
    ``, <rest>`` while anything is left.
    """
    tokens = list(tokens)
    steps: list[str] = []

    def reduce_at(i: int) -> None:
        a, op, b = tokens[i - 1], tokens[i], tokens[i + 1]
        value = a * b if op == "*" else a + b if op == "+" else a - b
        tokens[i - 1 : i + 2] = [value]
        line = f"{a}{op}{b}={value}"
        steps.append(line if len(tokens) == 1 else f"{line}, {_render(tokens)}")

    while "*" in tokens:
        reduce_at(tokens.index("*"))
    while len(tokens) > 1:
        reduce_at(1)
    return tokens[0], steps


@SYNTHETIC_TASKS.register("arithmetic")
class ArithmeticTask:
    """Integer expressions over ``+ - *``; the answer is the exact integer value."""

    name = "arithmetic"

    def __init__(self, config: ArithmeticConfig | None = None, *, difficulty: float | None = None) -> None:
        if config is not None and difficulty is not None:
            raise ValueError("give either config or difficulty")
        self.config = config or (ArithmeticConfig.from_difficulty(difficulty) if difficulty is not None else ArithmeticConfig())

    def _sample_tokens(self, rng: random.Random) -> list:
        cfg = self.config
        fewest = math.floor(cfg.num_terms)
        if cfg.max_terms:
            num_terms = rng.randint(fewest, cfg.max_terms)
        else:
            num_terms = fewest + (rng.random() < cfg.num_terms - fewest)
        ops = ["*" if rng.random() < cfg.mul_prob else rng.choice("+-") for _ in range(num_terms - 1)]
        tokens: list = []
        for i in range(num_terms):
            next_to_mul = (i > 0 and ops[i - 1] == "*") or (i < len(ops) and ops[i] == "*")
            bound = min(cfg.max_operand, cfg.max_mul_operand) if next_to_mul else cfg.max_operand
            tokens.append(rng.randint(0, bound))
            if i < len(ops):
                tokens.append(ops[i])
        return tokens

    def generate(self, num_problems: int, *, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        problems = []
        for i in range(num_problems):
            tokens = self._sample_tokens(rng)
            value, _ = solve_with_steps(tokens)
            problems.append(Problem(f"arithmetic/{seed}/{i}", f"{_render(tokens)}=?", str(value), {"tokens": tokens}))
        return problems

    def verify(self, response: str, gold: str) -> float:
        answer = final_answer_tag(response)
        if answer is None or not _INTEGER.fullmatch(answer):
            return 0.0
        return 1.0 if int(answer) == int(gold) else 0.0

    def solution_trace(self, problem: Problem, *, open_think: bool = True) -> str:
        tokens = problem.meta.get("tokens") or _parse(problem.problem)
        value, steps = solve_with_steps(tokens)
        return format_trace(steps, str(value), open_think=open_think)


def _parse(text: str) -> list:
    """Tokens of ``"3+4*2-5=?"`` (for problems whose meta was not kept)."""
    expression = text.removesuffix("=?")
    parts = re.findall(r"\d+|[+\-*]", expression)
    if _render(parts) != expression:
        raise ValueError(f"not an arithmetic problem: {text!r}")
    return [int(p) if p.isdigit() else p for p in parts]
