"""pass@k against brute-force enumeration, avg@k, maj@k, and the evaluate() report."""

import itertools
import math

import pytest

from r1core.data import Problem
from r1core.data.synthetic import ArithmeticTask
from r1core.rewards.extract import final_answer_tag
from r1core.eval import avg_at_k, evaluate, maj_at_k, majority_answer, mean_pass_at_k, pass_at_k


def brute_force_pass_at_k(n, c, k):
    """Fraction of the k-subsets of n samples (c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration_over_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # The binomial form overflows float for n this large; the product form does not.
    value = pass_at_k(1024, 3, 100)
    exact = 1 - math.comb(1021, 100) / math.comb(1024, 100)
    assert value == pytest.approx(exact, rel=1e-12)
    assert pass_at_k(1024, 0, 512) == 0.0 and pass_at_k(1024, 1000, 30) == 1.0
    assert pass_at_k(16, 4, 1) == pytest.approx(0.25)


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(TypeError):
        pass_at_k(4.0, 1, 1)


def test_avg_and_mean_pass():
    assert avg_at_k([1, 0, 1, 1]) == 0.75
    assert mean_pass_at_k([1, 4], 4, 1) == pytest.approx((0.25 + 1.0) / 2)
    with pytest.raises(ValueError):
        avg_at_k([])


def test_majority_vote():
    assert majority_answer(["3", None, "4", "4", "3", "4"]) == "4"
    assert majority_answer(["3", "4"]) == "3"  # ties go to the first seen
    assert majority_answer([None, None]) is None
    numeric = lambda a, b: float(a) == float(b)  # noqa: E731
    assert majority_answer(["2", "2.0", "3", "3"], numeric) == "2"  # class of 2 and 2.0 ties 3 and wins first
    assert majority_answer(["2", "3", "3.0", "2.00", "2"], numeric) == "2"
    answers = [["1", "2", "2"], ["5", "5", None], [None, None, None], ["1/2", "0.5", "0.50"]]
    golds = ["2", "6", "1", "0.5"]
    assert maj_at_k(answers, golds) == pytest.approx(1 / 4)
    assert maj_at_k(answers, golds, lambda a, b: a.strip() == b.strip() or (a, b) == ("0.5", "0.50")) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="golds"):
        maj_at_k(answers, golds[:2])


def test_evaluate_report_on_hand_case():
    problems = [Problem("p0", "1+1=?", "2"), Problem("p1", "2+2=?", "4"), Problem("p2", "3+3=?", "6")]
    responses = [
        ["<answer>2</answer>", "<answer>3</answer>", "<answer>2</answer>", "<answer>2</answer>"],
        ["<answer>5</answer>", "<answer>5</answer>", "<answer>4</answer>", "none"],
        ["<answer>1</answer>"] * 4,
    ]
    task = ArithmeticTask()
    report = evaluate(problems, responses, lambda r, g: [task.verify(x, y) for x, y in zip(r, g)],
                      extract_fn=final_answer_tag, name="toy")
    # Correct counts 3, 1, 0 of 4.
    assert report["toy/num_problems"] == 3 and report["toy/num_samples"] == 4
    assert report["toy/avg@4"] == pytest.approx(4 / 12)
    assert report["toy/pass@1"] == pytest.approx((3 / 4 + 1 / 4 + 0) / 3)
    assert report["toy/pass@2"] == pytest.approx((pass_at_k(4, 3, 2) + pass_at_k(4, 1, 2)) / 3)
    assert report["toy/pass@4"] == pytest.approx(2 / 3)
    assert report["toy/maj@4"] == pytest.approx(1 / 3)
    assert report["toy/maj@1"] == pytest.approx(1 / 3)
    assert set(report) == {f"toy/{k}" for k in ("num_problems", "num_samples", "mean_score", "avg@4", "pass@1", "pass@2",
                                                 "pass@4", "maj@1", "maj@2", "maj@4", "answer_marker_rate")}
    assert report["toy/answer_marker_rate"] == pytest.approx(11 / 12)  # one response of twelve marks no answer


def test_evaluate_validates_inputs():
    problems = [Problem("p0", "q", "1")]
    grader = lambda r, g: [1.0] * len(r)  # noqa: E731
    with pytest.raises(ValueError, match="same, non-zero number"):
        evaluate(problems * 2, [["a"], ["a", "b"]], grader)
    with pytest.raises(ValueError, match="every k"):
        evaluate(problems, [["a", "b"]], grader, ks=[3])
    with pytest.raises(ValueError, match="grader returned 1 scores"):
        evaluate(problems, [["a", "b"]], lambda r, g: [1.0])
    report = evaluate(problems, [["a", "b", "c"]], grader, keep_per_problem=True)
    assert report["per_problem"] == [{"id": "p0", "scores": [1.0, 1.0, 1.0], "num_correct": 3}]
    assert [k for k in report if k.startswith("pass@")] == ["pass@1", "pass@2", "pass@3"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_monotone_and_bounded(args):
    n, c, k = args
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value - 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value - 1e-12
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)
