"""Code execution reward: run the response's program against test cases in the sandbox.

The gold string of a code reward is a JSON object with either or both of:

    {"stdio":   [{"input": "1 2\\n", "output": "3\\n"}, ...],
     "asserts": ["assert add(1, 2) == 3", ...]}

- ``stdio``: the program runs once per case with ``input`` on stdin; it passes when its stdout
  matches ``output`` (``output_match``: "exact", "lines" = trailing spaces of each line and
  trailing blank lines ignored, or "tokens" = whitespace-separated tokens equal).
- ``asserts``: each statement runs once, appended to the program; it passes on exit status 0.

``make_code_gold(stdio=..., asserts=...)`` writes this serialisation. The program is the last
fenced code block (```python ... ``` or ``` ... ```) after ``</think>``, else the content of the
last ``<answer>`` tag. Score: fraction of cases passed, or all-or-nothing. Every run is a
separate sandboxed process (``r1core.rewards.sandbox``: namespaces, cgroups, seccomp; it
refuses to run without them unless ``sandbox.isolation="none"``). A direct call allows each
sample ``max_cases * (wall_timeout_s + 2)`` seconds in the default pool; in a ``RewardPool`` of
your own, set ``sample_timeout_s`` above ``num_cases * wall_timeout_s``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal

from r1core.rewards.extract import answer_region, find_answer_tags
from r1core.rewards.registry import register_reward
from r1core.rewards.sandbox import SandboxConfig, run_program

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)

OutputMatch = Literal["exact", "lines", "tokens"]


@dataclass(frozen=True)
class CodeExecutionConfig:
    """Settings of ``code_execution``.

    Fields:
        sandbox: limits of each run (time, memory, processes, output, network).
        output_match: how stdout is compared with the expected output (see module docstring).
        all_or_nothing: 1.0 only if every case passes (and stop at the first failure).
        max_cases: at most this many cases run per sample (the first ones).
        max_program_chars: a longer program is not run (score 0).
    """

    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    output_match: OutputMatch = "lines"
    all_or_nothing: bool = False
    max_cases: int = 64
    max_program_chars: int = 100_000

    def __post_init__(self) -> None:
        if isinstance(self.sandbox, dict):  # from a YAML/JSON run config
            object.__setattr__(self, "sandbox", SandboxConfig(**self.sandbox))
        if not isinstance(self.sandbox, SandboxConfig):
            raise TypeError(f"sandbox must be a SandboxConfig or a dict of its fields, got {self.sandbox!r}")


def _time_budget(config: CodeExecutionConfig) -> float:
    """Seconds one sample may take: every case at its wall limit, plus start-up per run."""
    return config.max_cases * (config.sandbox.wall_timeout_s + 2.0) + 5.0


def make_code_gold(stdio: list[tuple[str, str]] | None = None, asserts: list[str] | None = None) -> str:
    """The gold string of ``code_execution`` for these stdin/stdout pairs and assert lines."""
    gold: dict[str, list] = {}
    if stdio:
        gold["stdio"] = [{"input": stdin, "output": stdout} for stdin, stdout in stdio]
    if asserts:
        gold["asserts"] = list(asserts)
    if not gold:
        raise ValueError("a code gold needs at least one stdio pair or assert")
    return json.dumps(gold)


def parse_code_gold(gold: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(stdio pairs, asserts) from a gold string; ValueError naming the problem if malformed."""
    try:
        data = json.loads(gold)
    except json.JSONDecodeError as error:
        raise ValueError(f"code gold is not JSON: {error}") from error
    if not isinstance(data, dict) or not set(data) <= {"stdio", "asserts"} or not data:
        raise ValueError('code gold must be a JSON object with keys "stdio" and/or "asserts"')
    stdio = []
    for case in data.get("stdio", []):
        if not isinstance(case, dict) or not isinstance(case.get("input"), str) \
                or not isinstance(case.get("output"), str):
            raise ValueError(f'each stdio case needs string "input" and "output", got {case!r}')
        stdio.append((case["input"], case["output"]))
    asserts = data.get("asserts", [])
    if not all(isinstance(line, str) for line in asserts):
        raise ValueError("asserts must be strings")
    return stdio, asserts


def extract_program(response: str) -> str | None:
    """The last fenced code block after ``</think>``, else the last ``<answer>`` content."""
    region = answer_region(response)
    blocks = _FENCE_RE.findall(region)
    if blocks:
        return blocks[-1][1]
    tags = find_answer_tags(region)
    if tags and tags[-1].strip():
        return tags[-1]
    return None


def outputs_match(actual: str, expected: str, mode: OutputMatch) -> bool:
    """Compare a program's stdout with the expected output under ``mode``."""
    if mode == "exact":
        return actual == expected
    if mode == "tokens":
        return actual.split() == expected.split()
    if mode == "lines":
        def lines(text: str) -> list[str]:
            return [line.rstrip() for line in text.rstrip().splitlines()]
        return lines(actual) == lines(expected)
    raise ValueError(f"unknown output_match {mode!r}; valid: exact, lines, tokens")


def score_program(response: str, gold: str, config: CodeExecutionConfig) -> tuple[float, str]:
    """(score, reason) for one response: fraction (or all-or-nothing) of cases passed."""
    stdio, asserts = parse_code_gold(gold)
    program = extract_program(response)
    if program is None:
        return 0.0, "no program found"
    if len(program) > config.max_program_chars:
        return 0.0, f"program longer than {config.max_program_chars} characters"
    cases: list[tuple[str, str, str | None]] = [(program, stdin, out) for stdin, out in stdio]
    cases += [(program + "\n\n" + line + "\n", "", None) for line in asserts]
    cases = cases[: config.max_cases]
    passed, first_failure = 0, ""
    for source, stdin, expected in cases:
        result = run_program(source, stdin, config.sandbox)
        ok = not result.failure and (
            expected is None or outputs_match(result.stdout, expected, config.output_match)
        )
        if ok:
            passed += 1
            continue
        first_failure = first_failure or (result.failure or "wrong output")
        if config.all_or_nothing:
            return 0.0, first_failure
    score = passed / len(cases)
    if config.all_or_nothing:
        return (1.0, "") if passed == len(cases) else (0.0, first_failure)
    return score, first_failure


@register_reward("code_execution", config=CodeExecutionConfig, needs_gold=True, time_budget=_time_budget)
def code_execution(
    responses: list[str], golds: list[str], config: CodeExecutionConfig = CodeExecutionConfig()
) -> list[float]:
    """Fraction in [0, 1] of test cases the response's program passes, one per response.

    ``golds`` are JSON test cases (see the module docstring and ``make_code_gold``); a
    malformed gold raises ValueError.
    """
    return [score_program(r, g, config)[0] for r, g in zip(responses, golds, strict=True)]
