"""maj@k votes over normalised extracted answers and takes the winner's grade from the
grader; evaluate() keeps every sample's record."""

from __future__ import annotations

import pytest

from r1core.data.records import Problem
from r1core.eval import evaluate, majority_correct
from r1core.rewards.extract import final_or_last_number, normalize_answer


@pytest.mark.parametrize(
    "answer,key",
    [
        (r"\boxed{1,000}", "1000"),
        ("1000", "1000"),
        (r"\$1,000.50", "1000.5"),
        ("3.0", "3"),
        ("+7", "7"),
        ("-0.0", "0"),
        (r"x = \dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
        (r"90^\circ", "90"),
        (r"50\%", "50"),
        (r"\text{(B)}", "(B)"),
        (" 72. ", "72"),
        ("1,2", "1,2"),  # a list, not a thousands separator
        ("", None),
        (r"\boxed{}", None),
        (None, None),
    ],
)
def test_normalize_answer(answer, key):
    assert normalize_answer(answer) == key


def test_final_or_last_number():
    assert final_or_last_number("<think>3 and 4</think><answer>7</answer>") == "7"
    assert final_or_last_number(r"so the total is \boxed{12} apples") == r"\boxed{12}"
    # No marker: the last number of the answer region, as math_accuracy's fallback reads it.
    assert final_or_last_number("So, James runs 1,400 meters a week.") == "1,400"
    assert final_or_last_number("<think>try 3</think> It is 5, I think") == "5"
    assert final_or_last_number("<think>never closed 9") is None
    assert final_or_last_number("no numbers here") is None


def test_majority_correct_grades_the_winning_answer_by_its_first_sample():
    assert majority_correct(["4", "3", "4"], [1.0, 0.0, 1.0])
    assert not majority_correct(["3", "4", "3"], [0.0, 1.0, 0.0])
    assert majority_correct(["3", "4"], [1.0, 0.0])  # a tie goes to the answer seen first
    assert not majority_correct([None, None], [1.0, 1.0])  # no answer, no vote
    assert majority_correct([None, "4"], [0.0, 1.0])
    with pytest.raises(ValueError, match="2 answer keys but 1 scores"):
        majority_correct(["a", "b"], [1.0])


def test_maj_at_k_counts_equivalent_spellings_as_one_vote():
    problems = [Problem("p0", "q", "1000"), Problem("p1", "q", "6")]
    responses = [
        [r"\boxed{1,000}", r"\boxed{999}", "The answer is 1000.", r"\boxed{999}", "#### 1000"],
        [r"\boxed{6}", r"\boxed{7}", r"\boxed{7}", "none", "none"],
    ]
    grades = {r"\boxed{1,000}": 1.0, "The answer is 1000.": 1.0, "#### 1000": 1.0, r"\boxed{6}": 1.0}
    report = evaluate(problems, responses, lambda rs, gs: [grades.get(r, 0.0) for r in rs],
                      extract_fn=final_or_last_number, keep_samples=True, ks=[1, 3, 5])
    # p0: 1000 x3 (three spellings) beats 999 x2; p1: 7 x2 beats 6 x1.
    assert report["maj@5"] == pytest.approx(1 / 2)
    assert report["maj@1"] == pytest.approx(2 / 2)
    assert report["maj@3"] == pytest.approx(1 / 2)  # p0: 1000 twice of three; p1: 7 twice
    samples = report["samples"]
    assert len(samples) == 10 and samples[0] == {"id": "p0", "sample": 0, "response": r"\boxed{1,000}",
                                                 "answer": r"\boxed{1,000}", "score": 1.0, "correct": True}
    assert samples[2]["answer"] == "1000" and samples[8]["answer"] is None
