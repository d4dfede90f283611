"""Sampling-based accuracy metrics for reasoning benchmarks.

- pass@k: probability that at least one of k samples is correct, estimated without bias
  from n >= k samples of which c are correct (Chen et al. 2021):
  ``1 - C(n - c, k) / C(n, k)``, computed as the product ``prod_{i=n-c+1}^{n} (1 - k / i)``
  so no binomial coefficient (which overflows for n in the hundreds) is formed.
- avg@k: mean correctness over k samples, DeepSeek-R1's "pass@1" estimated from k samples.
- maj@k: correctness of the most frequent extracted answer among k samples (self-
  consistency). :func:`majority_correct` groups samples by a normalised answer key and
  takes the winning class's grade from the grader (so "\\frac12" and "0.5" vote apart but
  each is graded as math-verify grades it); :func:`maj_at_k` groups by an equivalence
  function and compares the winner with the gold through it.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

EqualFn = Callable[[str, str], bool]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct (``0 <= c <= n``, ``1 <= k <= n``)."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"n, c, k must be integers, got {n!r}, {c!r}, {k!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def avg_at_k(correct: Sequence[float]) -> float:
    """Mean score of one problem's samples (``correct``: k scores in [0, 1])."""
    if len(correct) == 0:
        raise ValueError("avg@k needs at least one sample")
    return float(sum(correct)) / len(correct)


def _default_equal(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def majority_answer(answers: Sequence[str | None], equal_fn: EqualFn = _default_equal) -> str | None:
    """The most frequent answer under ``equal_fn`` (``None`` entries, i.e. no answer
    extracted, do not vote). Ties go to the answer class seen first; ``None`` if no sample
    has an answer. Each answer is compared with one representative per class."""
    representatives: list[str] = []
    counts: list[int] = []
    for answer in answers:
        if answer is None:
            continue
        for index, representative in enumerate(representatives):
            if equal_fn(representative, answer):
                counts[index] += 1
                break
        else:
            representatives.append(answer)
            counts.append(1)
    if not counts:
        return None
    best = max(range(len(counts)), key=lambda i: (counts[i], -i))
    return representatives[best]


def maj_at_k(
    answers: Sequence[Sequence[str | None]],
    golds: Sequence[str],
    equal_fn: EqualFn = _default_equal,
) -> float:
    """Fraction of problems whose majority answer equals the gold under ``equal_fn``.

    answers: per problem, the extracted answer of each sample (``None`` = none found).
    golds: per problem, the gold answer. ``equal_fn(a, b)`` decides equivalence, both for
    grouping votes and for the final comparison with the gold (e.g. a math verifier).
    """
    if len(answers) != len(golds):
        raise ValueError(f"{len(answers)} answer lists but {len(golds)} golds")
    if not answers:
        raise ValueError("maj@k needs at least one problem")
    hits = 0
    for sample_answers, gold in zip(answers, golds):
        winner = majority_answer(sample_answers, equal_fn)
        hits += int(winner is not None and equal_fn(gold, winner))
    return hits / len(answers)


def mean_pass_at_k(num_correct: Sequence[int], num_samples: Sequence[int] | int, k: int) -> float:
    """pass@k averaged over problems (``num_correct[i]`` of ``num_samples[i]`` correct)."""
    if isinstance(num_samples, int):
        num_samples = [num_samples] * len(num_correct)
    if len(num_samples) != len(num_correct) or not num_correct:
        raise ValueError("need one sample count per problem and at least one problem")
    return sum(pass_at_k(n, c, k) for n, c in zip(num_samples, num_correct)) / len(num_correct)




def majority_correct(keys: Sequence[Hashable | None], scores: Sequence[float], threshold: float = 1.0) -> bool:
    """Whether one problem's majority answer is correct.

    keys: per sample, its normalised answer (``None``: no answer, no vote).
    scores: per sample, the grader's score. The most frequent key wins (ties go to the key
    seen first); the winner is correct when the score of its first sample reaches
    ``threshold``. No key at all is incorrect.
    """
    if len(keys) != len(scores):
        raise ValueError(f"{len(keys)} answer keys but {len(scores)} scores")
    counts: dict[Hashable, int] = {}
    first: dict[Hashable, int] = {}
    for index, key in enumerate(keys):
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, index)
    if not counts:
        return False
    winner = max(counts, key=lambda key: (counts[key], -first[key]))
    return scores[first[winner]] >= threshold
