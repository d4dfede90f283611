"""Score sampled responses and report pass@k, avg@k and maj@k.

Generation is not done here (the rollout engine is separate): the caller passes, per
problem, the list of sampled responses and a grader with the batch reward signature
``(responses, golds) -> scores``. All responses are graded in one call so a parallel grader
(a process pool, a sandbox) sees the whole batch.

maj@k votes over each sample's extracted answer after
:func:`r1core.rewards.extract.normalize_answer` (``\\boxed{1,000}`` and ``1000`` are one
vote), and the winning answer is as correct as the grader found its first sample.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from r1core.data.records import Problem
from r1core.eval.metrics import EqualFn, avg_at_k, maj_at_k, majority_correct, mean_pass_at_k
from r1core.rewards.extract import extract_answer, normalize_answer

Grader = Callable[[list[str], list[str]], list[float]]


def _default_ks(num_samples: int) -> list[int]:
    ks, k = [], 1
    while k <= num_samples:
        ks.append(k)
        k *= 2
    if ks[-1] != num_samples:
        ks.append(num_samples)
    return ks


def evaluate(
    problems: Sequence[Problem],
    responses: Sequence[Sequence[str]],
    grader: Grader,
    *,
    ks: Sequence[int] | None = None,
    extract_fn: Callable[[str], str | None] | None = None,
    equal_fn: EqualFn | None = None,
    correct_threshold: float = 1.0,
    name: str | None = None,
    keep_per_problem: bool = False,
    keep_samples: bool = False,
) -> dict[str, Any]:
    """Grade every response and report the benchmark's metrics.

    Args:
        problems: the problems (their ``answer`` is the gold).
        responses: per problem, its ``n`` sampled responses (the same ``n`` for all).
        grader: batch reward ``(responses, golds) -> scores``.
        ks: the k of pass@k and maj@k (default 1, 2, 4, ... up to n, and n).
        extract_fn: response -> answer string (or ``None``) for majority voting; maj@k is
            reported only when given.
        equal_fn: when given, answers are grouped by this equivalence and the winner is
            compared with the gold through it (:func:`maj_at_k`); by default they are grouped
            by :func:`normalize_answer` and the winner is graded by its first sample's score
            (:func:`majority_correct`).
        correct_threshold: a response counts as correct for pass@k when its score is at
            least this.
        name: prefix of the metric keys (``"math500/pass@1"``).
        keep_per_problem: include per-problem scores under ``"per_problem"``.
        keep_samples: include one record per sample under ``"samples"``: ``id``, ``sample``
            (its index), ``response``, ``answer`` (extracted), ``score``, ``correct``.

    Returns:
        ``{"num_problems", "num_samples", "avg@n", "pass@k"..., "maj@k"..., "mean_score",
        "answer_marker_rate"}`` (keys prefixed with ``name/`` when given). maj@k votes over the
        first k samples; ``answer_marker_rate`` is the share of responses that mark a final
        answer (``<answer>`` tags, ``\\boxed{}`` or ``####`` with something in it;
        :func:`extract_answer`), the answer-format rate.
    """
    if len(problems) != len(responses):
        raise ValueError(f"{len(problems)} problems but {len(responses)} response lists")
    if not problems:
        raise ValueError("nothing to evaluate")
    num_samples = len(responses[0])
    if num_samples == 0 or any(len(r) != num_samples for r in responses):
        raise ValueError("every problem needs the same, non-zero number of responses")
    ks = list(ks) if ks is not None else _default_ks(num_samples)
    if any(not 1 <= k <= num_samples for k in ks):
        raise ValueError(f"every k must lie in 1..{num_samples}, got {ks}")

    flat_responses = [r for group in responses for r in group]
    flat_golds = [p.answer for p in problems for _ in range(num_samples)]
    scores = [float(s) for s in grader(flat_responses, flat_golds)]
    if len(scores) != len(flat_responses):
        raise ValueError(f"grader returned {len(scores)} scores for {len(flat_responses)} responses")
    per_problem = [scores[i * num_samples : (i + 1) * num_samples] for i in range(len(problems))]
    num_correct = [sum(s >= correct_threshold for s in group) for group in per_problem]

    prefix = f"{name}/" if name else ""
    report: dict[str, Any] = {
        f"{prefix}num_problems": len(problems),
        f"{prefix}num_samples": num_samples,
        f"{prefix}mean_score": sum(scores) / len(scores),
        f"{prefix}avg@{num_samples}": sum(avg_at_k([float(s >= correct_threshold) for s in g]) for g in per_problem)
        / len(problems),
        f"{prefix}answer_marker_rate": sum(extract_answer(r).final is not None for r in flat_responses) / len(flat_responses),
    }
    for k in ks:
        report[f"{prefix}pass@{k}"] = mean_pass_at_k(num_correct, num_samples, k)
    answers = [[extract_fn(r) for r in group] for group in responses] if extract_fn is not None else None
    if answers is not None:
        golds = [p.answer for p in problems]
        for k in ks:
            if equal_fn is not None:
                report[f"{prefix}maj@{k}"] = maj_at_k([a[:k] for a in answers], golds, equal_fn=equal_fn)
                continue
            hits = sum(majority_correct([normalize_answer(a) for a in group[:k]], grades[:k], correct_threshold)
                       for group, grades in zip(answers, per_problem))
            report[f"{prefix}maj@{k}"] = hits / len(problems)
    if keep_samples:
        report[f"{prefix}samples"] = [
            {"id": p.id, "sample": j, "response": text, "answer": None if answers is None else answers[i][j],
             "score": per_problem[i][j], "correct": per_problem[i][j] >= correct_threshold}
            for i, (p, group) in enumerate(zip(problems, responses)) for j, text in enumerate(group)
        ]
    if keep_per_problem:
        report[f"{prefix}per_problem"] = [
            {"id": p.id, "scores": group, "num_correct": c} for p, group, c in zip(problems, per_problem, num_correct)
        ]
    return report
