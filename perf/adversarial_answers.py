"""Pathological model answers for the math reward (shared by the benchmark and the tests).

Each case is (name, response, gold, expected score, may_time_out). ``expected`` is the score
r1core gives when the sample finishes: garbage, deeper nesting than math-verify's parser
accepts (it gives up on recursion) and over-long answers score 0; a truncated box falls back to
the last expression. Cases marked ``may_time_out`` may instead hit the pool's per-sample
timeout (score 0, reason "timeout ..."). Either way every case must end in bounded time with
a float.
"""

from __future__ import annotations

from dataclasses import dataclass

MEGABYTE = 1 << 20


@dataclass(frozen=True)
class AdversarialCase:
    """One pathological response and its gold."""

    name: str
    response: str
    gold: str
    expected: float  # r1core's score when the sample finishes within its budget
    may_time_out: bool = False  # true when sympy may legitimately exceed the sample budget


def nested_fraction(depth: int) -> str:
    """\\frac{1}{\\frac{1}{...{2}}} nested ``depth`` times (value 2 for even depth, 1/2 for odd)."""
    return "\\frac{1}{" * depth + "2" + "}" * depth


def power_tower(base: int, height: int) -> str:
    """base^{base^{...}} of ``height`` levels."""
    return "^{".join([str(base)] * height) + "}" * (height - 1)


def adversarial_cases() -> list[AdversarialCase]:
    """The catalogue: deep nesting, huge numbers, megabyte strings, broken braces, bad unicode."""
    filler = "Let us think step by step. " * (MEGABYTE // 27)
    return [
        # Arithmetic left to compute where a number is asked for scores 0 before math-verify
        # computes anything (MathAccuracyConfig.require_evaluated).
        AdversarialCase("nested_fraction_10", f"\\boxed{{{nested_fraction(10)}}}", "2", 0.0),
        AdversarialCase("nested_fraction_200", f"\\boxed{{{nested_fraction(200)}}}", "2", 0.0, True),
        AdversarialCase("nested_fraction_1000", f"\\boxed{{{nested_fraction(1000)}}}", "2", 0.0, True),
        AdversarialCase("power_tower_2x5", f"\\boxed{{{power_tower(2, 5)}}}", "5", 0.0, True),
        AdversarialCase("power_tower_9x4", f"\\boxed{{{power_tower(9, 4)}}}", "5", 0.0, True),
        AdversarialCase("power_tower_10x10", f"\\boxed{{{power_tower(10, 10)}}}", "5", 0.0, True),
        # Against a gold that is itself a power, math-verify does compute: the sample's time
        # budget is what bounds it.
        AdversarialCase("power_tower_10x5_vs_power", f"\\boxed{{{power_tower(10, 5)}}}", "2^{10}", 0.0, True),
        AdversarialCase("huge_power", "\\boxed{2^{1000000000}}", "5", 0.0, True),
        AdversarialCase("huge_factorial", "\\boxed{(10^{9})!}", "5", 0.0, True),
        AdversarialCase("deep_parentheses", "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}", "1", 0.0, True),
        AdversarialCase("megabyte_prose_then_answer", filler + "\\boxed{5}", "5", 1.0),
        AdversarialCase("megabyte_prose_no_marker", filler + " so it is 5", "5", 1.0),
        AdversarialCase("megabyte_boxed_digits", "\\boxed{" + "9" * MEGABYTE + "}", "5", 0.0),
        AdversarialCase("megabyte_boxed_sum", "\\boxed{" + "1+" * (MEGABYTE // 2) + "1}", "5", 0.0),
        AdversarialCase("megabyte_inline_math", "$x$ " * (MEGABYTE // 4) + "\\boxed{5}", "5", 1.0),
        AdversarialCase("megabyte_dollars_no_marker", "$" * MEGABYTE, "5", 0.0),
        AdversarialCase("megabyte_open_braces", "\\boxed{" + "{" * MEGABYTE, "5", 0.0),
        AdversarialCase("many_unclosed_boxes", "\\boxed{" * 100_000, "5", 0.0),
        AdversarialCase("closing_braces_then_answer", "}" * 100_000 + "\\boxed{5}", "5", 1.0),
        AdversarialCase("unbalanced_in_box", "\\boxed{\\frac{1}{2}", "0.5", 1.0),
        AdversarialCase("spray_10000_boxes", " ".join(f"\\boxed{{{i}}}" for i in range(10_000)), "9999", 0.0),
        AdversarialCase("lone_surrogates", "\ud800 answer \\boxed{5\udfff}", "5", 0.0),
        AdversarialCase("lone_surrogate_outside_box", "\udc80\ud800 so \\boxed{5}", "5", 1.0),
        AdversarialCase("nul_and_controls", "\x00\x01\x1b[31m \\boxed{5}\x00", "5", 1.0),
        AdversarialCase("think_megabyte_unclosed", "<think>" + filler, "5", 0.0),
        AdversarialCase("many_unclosed_answer_tags", "<answer>" * 100_000 + "\\boxed{5}", "5", 1.0),
        AdversarialCase("many_unclosed_fences", "```python\n" * 100_000, "5", 0.0),
        AdversarialCase("answer_tag_megabyte", "<answer>" + "1" * MEGABYTE + "</answer>", "5", 0.0),
        AdversarialCase("latex_macro_bomb", "\\boxed{" + "\\sqrt{" * 3000 + "2" + "}" * 3000 + "}", "2", 0.0, True),
        AdversarialCase("matrix_bomb", "\\boxed{\\begin{pmatrix}" + "&".join(["1"] * 20000) + "\\end{pmatrix}}", "5", 0.0, True),
    ]


def normal_cases() -> list[tuple[str, str]]:
    """A few ordinary (response, gold) pairs to check the pool keeps scoring between attacks."""
    return [
        ("so the answer is \\boxed{\\frac{1}{2}}", "0.5"),
        ("<think>2+2</think><answer>4</answer>", "4"),
        ("Janet makes 9 * 2 = 18.\n#### 18", "18"),
        ("\\boxed{7}", "8"),
    ]
