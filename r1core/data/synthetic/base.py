"""What every synthetic task provides, and the registry of tasks.

A synthetic task generates problems with a known answer, verifies responses itself, and
writes R1-format solution traces for SFT, so the whole pipeline (SFT, GRPO, evaluation)
runs on CPU with a tiny model and no downloaded data.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Protocol, Sequence

from r1core._registry import Registry
from r1core.data.records import Problem
from r1core.rewards.extract import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN


class SyntheticTask(Protocol):
    name: str

    def generate(self, num_problems: int, *, seed: int) -> list[Problem]:
        """``num_problems`` problems, the same for the same seed."""
        ...

    def verify(self, response: str, gold: str) -> float:
        """1.0 when the response's ``<answer>`` solves the problem, else 0.0."""
        ...

    def solution_trace(self, problem: Problem, *, open_think: bool = True) -> str:
        """``<think>`` step-by-step working ``</think><answer>...</answer>`` (without the
        opening tag when ``open_think`` is False)."""
        ...


SYNTHETIC_TASKS: Registry[Callable[..., SyntheticTask]] = Registry("synthetic task")


def get_task(name: str, **config: Any) -> SyntheticTask:
    """The task ``name`` (``arithmetic``, ``countdown``) built with its config fields, or
    with ``difficulty=`` (a float in [0, 1]) mapped through its ``from_difficulty``."""
    factory = SYNTHETIC_TASKS.get(name)
    return factory(**config)


def format_trace(steps: Sequence[str], answer: str, *, open_think: bool = True) -> str:
    """Join working lines into the R1 format; ``open_think=False`` leaves out the opening
    ``<think>`` for prompts that already end with it (the ``compact`` template)."""
    body = "\n".join(steps)
    return f"{THINK_OPEN if open_think else ''}{body}{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def split_problems(
    task: SyntheticTask, num_train: int, num_test: int, *, seed: int, max_draws: int = 20
) -> tuple[list[Problem], list[Problem]]:
    """Train and held-out problems with no problem text in both (held-out accuracy then
    measures generalisation, not memorisation). Raises if the task's problem space is too
    small to provide ``num_test`` distinct unseen problems."""
    train = task.generate(num_train, seed=seed)
    seen = {p.problem for p in train}
    test: list[Problem] = []
    rng = random.Random(seed)
    for _ in range(max_draws):
        for problem in task.generate(num_test, seed=rng.randrange(2**31)):
            if problem.problem not in seen:
                seen.add(problem.problem)
                test.append(problem)
        if len(test) >= num_test:
            break
    if len(test) < num_test:
        raise ValueError(f"only {len(test)} held-out problems distinct from training; raise the difficulty")
    test = [Problem(f"{task.name}/test/{i}", p.problem, p.answer, p.meta) for i, p in enumerate(test[:num_test])]
    return train, test
