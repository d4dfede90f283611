"""Answer extraction and math_accuracy on hand-checked cases (real math-verify)."""

from __future__ import annotations

import pytest

from r1core.rewards import MathAccuracyConfig, get_reward, math_accuracy
from r1core.rewards.extract import answer_region, extract_answer, find_boxed
from r1core.rewards.math import score_math_answer

pytest.importorskip("math_verify")


# ----------------------------------------------------------------- extraction
def test_find_boxed_balances_braces_and_skips_unbalanced():
    text = r"a \boxed{\frac{1}{2}} b \fbox{x^{2}} c \boxed 7 d \boxed{unclosed"
    assert find_boxed(text) == [
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{x^{2}}", "x^{2}"),
        (r"\boxed{7}", "7"),
    ]
    # An escaped brace does not close the box; a box nested in a box is not listed twice.
    assert find_boxed(r"\boxed{\{1\} \boxed{2}}") == [(r"\boxed{\{1\} \boxed{2}}", r"\{1\} \boxed{2}")]
    # An unclosed outer box still lets a closed inner box be found.
    assert find_boxed(r"\boxed{ \boxed{5}") == [(r"\boxed{5}", "5")]


def test_answer_region_after_think():
    assert answer_region("<think>\\boxed{1}</think> final \\boxed{2}") == " final \\boxed{2}"
    assert answer_region("<think>never closed \\boxed{1}") == ""
    assert answer_region("no tags \\boxed{3}") == "no tags \\boxed{3}"


def test_extract_answer_marker_priority_and_last_wins():
    tagged = extract_answer("\\boxed{9} <answer>1</answer> <answer>\\boxed{2}</answer>")
    assert (tagged.kind, tagged.final, tagged.boxed, tagged.num_distinct) == ("answer_tag", "\\boxed{2}", True, 2)
    boxed = extract_answer("first \\boxed{3} then \\boxed{4}")
    assert (boxed.kind, boxed.final, boxed.num_distinct) == ("boxed", "\\boxed{4}", 2)
    hashed = extract_answer("work\n#### 1,234\n")
    assert (hashed.kind, hashed.final) == ("hash", "1,234")
    assert extract_answer("the answer is 5").kind == "none"


def test_distinct_count_ignores_phantom_and_whitespace():
    text = "\\boxed{\\phantom{2}}" * 6 + "\\boxed{4}\\boxed{ 4 }"
    assert extract_answer(text).num_distinct == 1


@pytest.mark.parametrize(
    ("response", "final", "boxed"),
    [
        ("\\boxed{42} and a blank box to end: \\boxed{}", "\\boxed{42}", True),
        ("\\boxed{7}\\boxed{\\phantom{2}}\\boxed{ }", "\\boxed{7}", True),
        ("<answer>12</answer><answer> </answer>", "12", False),
        ("\\boxed{}", None, False),
        ("<answer></answer>", None, False),
    ],
)
def test_empty_markers_are_no_answer(response, final, boxed):
    extracted = extract_answer(response)
    assert (extracted.final, extracted.boxed) == (final, boxed)


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        ("\\boxed{0+4+4}", "8", 0.0),  # the question copied into the box, left for the grader to add
        ("\\boxed{2 \\times 4}", "8", 0.0),
        ("\\boxed{\\sqrt{64}}", "8", 0.0),
        ("\\boxed{x = 4+4}", "8", 0.0),
        ("so the answer is 4 + 4", "8", 0.0),  # the fallback extraction too
        ("\\boxed{x = 8}", "8", 1.0),
        ("\\boxed{-\\frac{6}{8}}", "-0.75", 1.0),  # a fraction is one number
        ("\\boxed{50\\%}", "50", 1.0),
        ("\\boxed{\\$18.00}", "18", 1.0),
        ("\\boxed{\\sqrt{18}}", "3\\sqrt{2}", 1.0),  # the gold is no plain number: math-verify decides
    ],
)
def test_a_number_is_answered_with_a_number_not_with_arithmetic(response, gold, expected):
    assert math_accuracy([response], [gold]) == [expected]
    assert math_accuracy([response], [gold], config=MathAccuracyConfig(require_evaluated=False)) == [1.0]


def test_an_empty_box_earns_nothing_and_hides_no_earlier_answer():
    config = MathAccuracyConfig(fallback_extraction=False)
    assert math_accuracy(["\\boxed{}"], ["\\boxed{}"], config=config) == [0.0]
    assert math_accuracy(["\\boxed{5}. Check: \\boxed{}"], ["5"], config=config) == [1.0]


# ----------------------------------------------------------------- math_accuracy
@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        ("so \\boxed{0.75}", "\\frac34", 1.0),  # plain-LaTeX gold without braces
        ("so \\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("so \\boxed{\\dfrac12}", "\\frac{1}{2}", 1.0),
        ("so \\boxed{10000}", "10{,}000", 1.0),  # thousands separator in the gold
        ("so \\boxed{x=5}", "5", 1.0),
        ("so \\boxed{(1,2)}", "(1, 2)", 1.0),
        ("so \\boxed{3\\sqrt{2}}", "\\sqrt{18}", 1.0),
        ("so \\boxed{0.76}", "\\frac34", 0.0),
        ("<think>maybe \\boxed{2}</think><answer>7</answer>", "7", 1.0),
        ("<think>it is \\boxed{7}</think><answer>2</answer>", "7", 0.0),  # thinking does not count
        ("<think>it is \\boxed{7} and the output was cut", "7", 0.0),  # truncated: no answer
        ("<answer>18 dollars</answer>", "18", 1.0),  # prose in the tag: math-verify extraction
        ("Janet makes 9 * 2 = 18.\n#### 18", "18", 1.0),
        ("She makes $18 a day.\nA: 18", "Janet ...\n#### 18", 1.0),  # fallback, GSM8K gold
        ("first \\boxed{4}, correction: \\boxed{5}", "5", 1.0),  # the last answer counts
        ("first \\boxed{5}, correction: \\boxed{4}", "5", 0.0),
        ("\\boxed{1, 2, 3}", "2", 0.0),  # a list of candidates is not the answer
        ("\\boxed{2 \\text{ or } 3}", "3", 0.0),
        ("no answer here at all", "3", 0.0),
        ("", "3", 0.0),
    ],
)
def test_math_accuracy_cases(response, gold, expected):
    assert math_accuracy([response], [gold]) == [expected]


def test_spraying_boxed_answers_earns_nothing():
    spray = " ".join(f"\\boxed{{{value}}}" for value in range(1, 6))  # ends with the gold 5
    score, reason = score_math_answer(spray, "5", MathAccuracyConfig())
    assert (score, reason) == (0.0, "spray: 5 distinct answers")
    # Up to max_distinct_answers distinct candidates is a correction, not a spray.
    assert math_accuracy(["\\boxed{3} \\boxed{4} \\boxed{5}"], ["5"]) == [1.0]
    assert get_reward("math_accuracy", max_distinct_answers=2)(["\\boxed{3} \\boxed{4} \\boxed{5}"], ["5"]) == [0.0]


def test_fallback_can_be_disabled():
    strict = get_reward("math_accuracy", fallback_extraction=False)
    assert strict(["The answer is 18"], ["18"]) == [0.0]
    assert math_accuracy(["The answer is 18"], ["18"]) == [1.0]


def test_reasons():
    config = MathAccuracyConfig()
    assert score_math_answer("\\boxed{4}", "5", config) == (0.0, "wrong answer")
    assert score_math_answer("nothing", "5", config) == (0.0, "no final answer")
    assert score_math_answer("\\boxed{" + "1" * 2000 + "}", "5", config)[1].startswith("final answer longer")
    assert score_math_answer("\\boxed{5}", "", config)[1].startswith("gold unparseable")


def test_batch_shape_and_length_mismatch():
    assert math_accuracy(["\\boxed{1}", "\\boxed{2}", "x"], ["1", "1", "1"]) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        math_accuracy(["a", "b"], ["a"])
