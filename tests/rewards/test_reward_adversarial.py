"""Pathological answers (perf/adversarial_answers.py) are scored in bounded time through the
pool, with no exception reaching the caller, and ordinary answers keep scoring alongside."""

from __future__ import annotations

import time

import pytest
from perf_scripts import adversarial_answers

from r1core.rewards import RewardPool, RewardPoolConfig, get_reward
from r1core.rewards.extract import extract_answer

pytest.importorskip("math_verify")

CASES = adversarial_answers.adversarial_cases()


def test_extraction_is_fast_on_every_case():
    # The pure-Python extraction runs before any sympy work; it must stay linear: ~0.5 s for a
    # megabyte of braces on an idle core (a quadratic scan would take hours). The bound leaves
    # room for a machine shared with other jobs.
    for case in CASES:
        started = time.perf_counter()
        extract_answer(case.response)
        assert time.perf_counter() - started < 5.0, case.name


def _score_all(cases, sample_timeout_s: float) -> tuple[list, list, float]:
    normal = adversarial_answers.normal_cases()
    responses = [r for r, _ in normal] + [c.response for c in cases] + [r for r, _ in normal]
    golds = [g for _, g in normal] + [c.gold for c in cases] + [g for _, g in normal]
    config = RewardPoolConfig(num_workers=2, sample_timeout_s=sample_timeout_s, chunk_size=4)
    with RewardPool(config) as pool:
        started = time.perf_counter()
        result = pool.score(get_reward("math_accuracy"), responses, golds)
        elapsed = time.perf_counter() - started
    return result.scores, result.reasons, elapsed


def _check(cases, scores, reasons, elapsed, sample_timeout_s):
    normal_expected = [1.0, 1.0, 1.0, 0.0]
    assert scores[:4] == normal_expected and scores[-4:] == normal_expected
    assert reasons[:4] == [None] * 4 and reasons[-4:] == [None] * 4
    num_timeouts = 0
    for case, score, reason in zip(cases, scores[4:-4], reasons[4:-4]):
        timed_out = reason is not None and reason.startswith("timeout")
        num_timeouts += timed_out
        assert isinstance(score, float)
        assert score == case.expected or (case.may_time_out and timed_out and score == 0.0), (case.name, score, reason)
    # Timeouts run two at a time; each also costs a worker restart (~1-3 s on a loaded machine).
    bound = (num_timeouts / 2 + 1) * (sample_timeout_s + 4.0) + 30.0
    assert elapsed < bound, (elapsed, num_timeouts)


def test_adversarial_cases_that_finish_quickly():
    cases = [case for case in CASES if not case.may_time_out]
    scores, reasons, elapsed = _score_all(cases, sample_timeout_s=10.0)
    assert all(reason is None for reason in reasons)
    _check(cases, scores, reasons, elapsed, 10.0)


@pytest.mark.slow
def test_all_adversarial_cases_in_bounded_time():
    scores, reasons, elapsed = _score_all(CASES, sample_timeout_s=3.0)
    _check(CASES, scores, reasons, elapsed, 3.0)
