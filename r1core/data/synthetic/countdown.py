"""Countdown: combine the given numbers with ``+ - * /`` to reach a target.

``make 7 from 3 4 5`` -> ``<answer>(3*4)-5</answer>``. Many expressions can be right, so
the verifier checks the expression itself: only the given numbers (each at most once, or
exactly once with ``use_all``), only the four operations and parentheses, exact rational
arithmetic, and the value equal to the target. The gold string is
``"<target>:<n1>,<n2>,..."``.
"""

from __future__ import annotations

import ast
import math
import random
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from r1core.data.records import Problem
from r1core.data.synthetic.base import SYNTHETIC_TASKS, format_trace
from r1core.rewards.extract import final_answer_tag

_MAX_EXPRESSION_CHARS = 200


@dataclass(frozen=True)
class CountdownConfig:
    """num_numbers: mean count of given numbers (fractional part = probability of one more).
    max_number: numbers are drawn from ``1..max_number``.
    operators: the operations the generator builds targets with (a subset of ``+-*/``;
        ``/`` only where it divides exactly).
    max_target: targets are integers in ``1..max_target``.
    use_all: whether a solution must use every number exactly once.
    """

    num_numbers: float = 3.0
    max_number: int = 9
    operators: str = "+-*"
    max_target: int = 100
    use_all: bool = True

    def __post_init__(self) -> None:
        if not self.num_numbers >= 2:
            raise ValueError(f"num_numbers must be >= 2, got {self.num_numbers}")
        if self.max_number < 2 or self.max_target < 1:
            raise ValueError("max_number must be >= 2 and max_target >= 1")
        if not self.operators or set(self.operators) - set("+-*/"):
            raise ValueError(f"operators must be a non-empty subset of '+-*/', got {self.operators!r}")

    @classmethod
    def from_difficulty(cls, difficulty: float) -> "CountdownConfig":
        """``difficulty`` in [0, 1]: 2 -> 5 numbers, up to 9 -> 50, targets up to 20 -> 500."""
        if not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty must lie in [0, 1], got {difficulty}")
        return cls(
            num_numbers=2.0 + 3.0 * difficulty,
            max_number=int(round(9 + 41 * difficulty)),
            max_target=int(round(20 + 480 * difficulty)),
        )


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return None if b == 0 else a / b


def parse_gold(gold: str) -> tuple[int, list[int]]:
    """``"7:3,4,5"`` -> ``(7, [3, 4, 5])``."""
    try:
        target, numbers = gold.split(":")
        return int(target), [int(n) for n in numbers.split(",")]
    except ValueError:
        raise ValueError(f"countdown gold must look like '7:3,4,5', got {gold!r}") from None


def evaluate_expression(text: str) -> tuple[Fraction, list[int]] | None:
    """Value and the integer literals of an expression over ``+ - * /`` and parentheses;
    ``None`` if it is anything else (names, calls, powers, floats, division by zero...)."""
    if len(text) > _MAX_EXPRESSION_CHARS:
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return None
    literals: list[int] = []
    operators = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}

    def walk(node: ast.AST) -> Fraction | None:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            literals.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in operators:
            left, right = walk(node.left), walk(node.right)
            if left is None or right is None:
                return None
            return _apply(left, operators[type(node.op)], right)
        return None

    value = walk(tree.body)
    return None if value is None else (value, literals)


@SYNTHETIC_TASKS.register("countdown")
class CountdownTask:
    """Countdown numbers game with a verifier that accepts any valid expression."""

    name = "countdown"

    def __init__(self, config: CountdownConfig | None = None, *, difficulty: float | None = None) -> None:
        if config is not None and difficulty is not None:
            raise ValueError("give either config or difficulty")
        self.config = config or (CountdownConfig.from_difficulty(difficulty) if difficulty is not None else CountdownConfig())

    def _sample(self, rng: random.Random) -> tuple[list[int], list[tuple[str, int]], int]:
        cfg = self.config
        count = int(math.floor(cfg.num_numbers)) + (rng.random() < cfg.num_numbers - math.floor(cfg.num_numbers))
        for _ in range(1000):
            numbers = [rng.randint(1, cfg.max_number) for _ in range(count)]
            order = numbers[:]
            rng.shuffle(order)
            value = Fraction(order[0])
            chain: list[tuple[str, int]] = []
            for n in order[1:]:
                op = rng.choice(cfg.operators)
                value = _apply(value, op, Fraction(n))
                chain.append((op, n))
                if value is None:
                    break
            if value is not None and value.denominator == 1 and 1 <= value <= cfg.max_target:
                return numbers, [("", order[0]), *chain], int(value)
        raise RuntimeError(f"could not build a countdown problem with {cfg}; widen max_target or the operators")

    def generate(self, num_problems: int, *, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        problems = []
        for i in range(num_problems):
            numbers, chain, target = self._sample(rng)
            text = f"make {target} from {' '.join(map(str, numbers))}"
            gold = f"{target}:{','.join(map(str, numbers))}"
            problems.append(Problem(f"countdown/{seed}/{i}", text, gold, {"chain": chain}))
        return problems

    def verify(self, response: str, gold: str) -> float:
        target, numbers = parse_gold(gold)
        answer = final_answer_tag(response)
        if answer is None:
            return 0.0
        result = evaluate_expression(answer)
        if result is None:
            return 0.0
        value, used = result
        available, used_counts = Counter(numbers), Counter(used)
        if any(used_counts[n] > available[n] for n in used_counts):
            return 0.0
        if self.config.use_all and used_counts != available:
            return 0.0
        return 1.0 if value == target else 0.0

    def solution_trace(self, problem: Problem, *, open_think: bool = True) -> str:
        chain = problem.meta.get("chain")
        if not chain:
            raise ValueError(f"problem {problem.id} has no construction chain in meta; generate it with this task")
        value = Fraction(chain[0][1])
        expression = str(chain[0][1])
        steps = []
        for op, n in chain[1:]:
            new_value = _apply(value, op, Fraction(n))
            steps.append(f"{_fmt(value)}{op}{n}={_fmt(new_value)}")
            expression = f"({expression}){op}{n}" if any(c in expression for c in "+-*/") else f"{expression}{op}{n}"
            value = new_value
        return format_trace(steps, expression, open_think=open_think)


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
