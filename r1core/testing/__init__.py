"""Test and benchmark utilities for code that embeds :mod:`r1core.ops`.

Public, like ``torch.testing``: the op tests in ``tests/`` and the benchmarks in ``perf/``
use exactly these, and a trainer that embeds the ops can use them to check its integration.
Needs torch alone.

* :func:`make_logprobs_inputs`, :func:`make_grpo_loss_inputs`, :func:`make_group_rewards`:
  input factories scaled like a trained model's (``inputs.py``).
* :func:`assert_close_to_reference`: the tolerance rule of every kernel-vs-reference test,
  against a float64 reference (``tolerance.py``).
* :func:`peak_memory_bytes`: peak memory of a call above what was live before it, on CUDA
  and CPU (``memory.py``).
"""

from r1core.testing.inputs import make_group_rewards, make_grpo_loss_inputs, make_logprobs_inputs
from r1core.testing.memory import peak_memory_bytes
from r1core.testing.tolerance import assert_close_to_reference, default_floor, reference_error_bound

__all__ = [
    "assert_close_to_reference",
    "default_floor",
    "make_group_rewards",
    "make_grpo_loss_inputs",
    "make_logprobs_inputs",
    "peak_memory_bytes",
    "reference_error_bound",
]
