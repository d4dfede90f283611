"""Evaluation of sampled responses: unbiased pass@k, avg@k (R1's pass@1 from k samples),
maj@k, and :func:`evaluate` which grades per-problem samples and reports them."""

from r1core.eval.evaluate import Grader, evaluate
from r1core.eval.metrics import avg_at_k, maj_at_k, majority_answer, majority_correct, mean_pass_at_k, pass_at_k

__all__ = ["Grader", "avg_at_k", "evaluate", "maj_at_k", "majority_answer", "majority_correct", "mean_pass_at_k", "pass_at_k"]
