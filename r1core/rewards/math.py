"""Math accuracy reward: the response's final answer equals the gold answer (math-verify).

Extraction follows ``r1core.rewards.extract`` (answer region after ``</think>``, last
``<answer>`` tag / ``\\boxed{}`` / ``#### N``, spraying rule). The extracted answer and the gold
are parsed and compared by math-verify, which understands LaTeX (``\\frac34``, ``0.5``,
``10{,}000``, sets, intervals, equations such as ``x=5`` against ``5``, percentages, units).

Gold strings: a gold holding a marker (``\\boxed{}``, ``<answer>``, ``#### N``, as in GSM8K's
``answer`` field) is extracted like a response; otherwise the gold is the bare final answer,
read as LaTeX.

math-verify's own timeouts are disabled here (``parsing_timeout=None``,
``timeout_seconds=None``) on purpose: they are built on ``signal.alarm``, which only works in
the main thread (a trainer scoring from a helper thread gets a ValueError), has a one-second
granularity, and cannot interrupt C-level work such as a huge integer power, which holds the
interpreter until it returns. Bounded time is the job of the worker processes of
``r1core.rewards.pool.RewardPool``, which kill a worker whose sample overruns. Called directly,
``math_accuracy`` sends its batch to the process's default pool (``r1core.rewards.registry``),
so ``math_accuracy([r"$\\boxed{10^{10^{10^{10^{10}}}}}$"], ["2^{10}"])`` returns ``[0.0]`` once the
sample timeout passes; only ``score_math_answer`` and code under ``scoring_in_process()`` run
unbounded.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from r1core._extras import require
from r1core.rewards.extract import extract_answer
from r1core.rewards.registry import register_reward

_PROSE_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_TEXT_COMMAND_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox|operatorname)\s*\{[^{}]*\}")
_MATH_DELIMITERS = ("$", "\\(", "\\[")


@dataclass(frozen=True)
class MathAccuracyConfig:
    """Settings of ``math_accuracy``.

    Fields:
        fallback_extraction: with no ``<answer>``/``\\boxed``/``####`` marker, use math-verify's
            own extraction ("answer is ...", last LaTeX or number) on the end of the answer
            region. Needed for answers such as GSM8K's ``A: 18``; set False to give 0 to any
            response without a marker.
        fallback_tail_chars: how many characters at the end of the answer region the fallback
            searches (the final answer is at the end; this bounds regex work on huge texts).
        max_distinct_answers: more distinct candidate answers than this is a spray: score 0.
        max_answer_chars: a final answer longer than this is not parsed (score 0); real
            answers are short and megabyte LaTeX only burns the sample's time budget.
        float_rounding: decimal places floats are rounded to before comparison (math-verify).
        numeric_precision: significant digits for numeric comparison (math-verify).
        strict: math-verify's strict mode (variables matter; sets are not tuples).
        require_evaluated: when the gold is a plain number, the answer must be one too (or
            ``x = <number>``, or a percentage): an answer that is still arithmetic, such as
            ``\\boxed{4-3+3}`` or ``\\boxed{\\sqrt{16}}``, earns nothing. math-verify would
            compute it, so a policy learns to copy the question into the box instead of
            answering it (``examples/smollm2_arithmetic_grpo.yaml`` found this within 3 steps).
    """

    fallback_extraction: bool = True
    fallback_tail_chars: int = 2000
    max_distinct_answers: int = 3
    max_answer_chars: int = 1000
    float_rounding: int = 6
    numeric_precision: int = 15
    strict: bool = True
    require_evaluated: bool = True


def _math_verify() -> Any:
    math_verify = require("math_verify", extra="rewards", feature="r1core.rewards.math")
    # math-verify logs a warning the first time its timeouts are disabled; here that is the
    # design (see the module docstring), so mark the warning as already shown.
    for module in ("math_verify.parser", "math_verify.grader"):
        sys.modules[module].TIMEOUT_WARNING_SHOWN = True
    return math_verify


def _parse(text: str) -> list[Any]:
    # parsing_timeout=None: see the module docstring (signals; the pool bounds time instead).
    return _math_verify().parse(text, parsing_timeout=None)


def _looks_like_prose(text: str) -> bool:
    """True if ``text`` holds a word of 3+ letters outside LaTeX commands and ``\\text{}``."""
    return _PROSE_WORD_RE.search(_TEXT_COMMAND_RE.sub(" ", text)) is not None


def parse_answer_text(text: str) -> list[Any]:
    """Parse one final-answer text (a box's content, an ``<answer>`` tag, a bare gold).

    Bare LaTeX (``\\frac34``, ``(1, 2)``, ``x=5``) is parsed as the content of a ``\\boxed{}``,
    which gives it math-verify's boxed normalisation (``\\text``, units, ``10{,}000``). Text
    with math delimiters or prose words ("18 dollars", "The answer is $5$") goes through
    math-verify's extraction instead, which picks the anchored or last expression.
    Returns math-verify's parse result: [sympy object, string] or [] when nothing parses.
    """
    text = text.strip()
    if not text:
        return []
    if not _looks_like_prose(text) and not any(d in text for d in _MATH_DELIMITERS):
        parsed = _parse("\\boxed{" + text + "}")
        if parsed:
            return parsed
    return _parse(text)


def parse_final_answer(text: str, config: MathAccuracyConfig) -> tuple[list[Any], str]:
    """Extract and parse the final answer of a response or gold; returns (parsed, reason).

    ``reason`` is "" on success, otherwise why nothing was parsed (no answer, spray, ...).
    """
    extracted = extract_answer(text)
    if extracted.num_distinct > config.max_distinct_answers:
        return [], f"spray: {extracted.num_distinct} distinct answers"
    if extracted.final is None:
        if not config.fallback_extraction or not extracted.region.strip():
            return [], "no final answer"
        parsed = _parse(extracted.region[-config.fallback_tail_chars :])
        return parsed, "" if parsed else "no final answer"
    if len(extracted.final) > config.max_answer_chars:
        return [], f"final answer longer than {config.max_answer_chars} characters"
    parsed = _parse(extracted.final) if extracted.boxed else parse_answer_text(extracted.final)
    return parsed, "" if parsed else f"unparseable {extracted.kind} answer"


@lru_cache(maxsize=4096)
def _parse_gold_cached(gold: str, config: MathAccuracyConfig) -> tuple[tuple[Any, ...], str]:
    extracted = extract_answer(gold)
    if extracted.kind != "none":
        parsed, reason = parse_final_answer(gold, config)
    else:
        parsed = parse_answer_text(gold)
        reason = "" if parsed else "no final answer"
    return tuple(parsed), reason


def _is_plain_number(value: Any) -> bool:
    import sympy

    return isinstance(value, sympy.Number)


def _is_unevaluated_arithmetic(parsed: list[Any]) -> bool:
    """True when math-verify's parse of an answer is arithmetic on numbers left to compute
    (``3+4``, ``2 \\times 4``, ``\\sqrt{16}``), also as the right side of ``x = ...``; a number,
    a fraction (parsed as one number) or a percentage is not."""
    import sympy

    value = parsed[0]
    if isinstance(value, sympy.Equality):
        value = value.rhs
    if not isinstance(value, sympy.Expr) or isinstance(value, sympy.Number):
        return False
    if isinstance(value, sympy.Mul):
        factors = [arg.args[0] if isinstance(arg, sympy.UnevaluatedExpr) else arg for arg in value.args]
        if sympy.Rational(1, 100) in factors and all(isinstance(f, sympy.Number) for f in factors):
            return False  # a percentage: math-verify reads "50\%" as 50 * (1/100)
    return bool(value.is_number)


def score_math_answer(response: str, gold: str, config: MathAccuracyConfig) -> tuple[float, str]:
    """Score one response: (1.0, "") if its final answer equals the gold, else (0.0, reason)."""
    gold_parsed, gold_reason = _parse_gold_cached(gold, config)
    if not gold_parsed:
        return 0.0, f"gold unparseable ({gold_reason})"
    parsed, reason = parse_final_answer(response, config)
    if not parsed:
        return 0.0, reason
    if config.require_evaluated and _is_plain_number(gold_parsed[0]) and _is_unevaluated_arithmetic(parsed):
        return 0.0, "unevaluated arithmetic where a number is asked for"
    # timeout_seconds=None: see the module docstring (signals; the pool bounds time instead).
    equal = _math_verify().verify(
        list(gold_parsed),
        parsed,
        float_rounding=config.float_rounding,
        numeric_precision=config.numeric_precision,
        strict=config.strict,
        timeout_seconds=None,
    )
    return (1.0, "") if equal else (0.0, "wrong answer")


@register_reward("math_accuracy", config=MathAccuracyConfig, needs_gold=True)
def math_accuracy(
    responses: list[str], golds: list[str], config: MathAccuracyConfig = MathAccuracyConfig()
) -> list[float]:
    """1.0 per response whose final answer equals its gold answer, else 0.0.

    Args:
        responses: model responses, one string each.
        golds: gold answers, same length (bare LaTeX, or text with a ``\\boxed``/``####``).
    Returns:
        list of floats in {0.0, 1.0}, same length.
    """
    return [score_math_answer(r, g, config)[0] for r, g in zip(responses, golds, strict=True)]


def warmup() -> None:
    """Import math-verify and build its parsers (the first parse compiles the grammar)."""
    score_math_answer("\\boxed{\\frac{1}{2}}", "0.5", MathAccuracyConfig())
