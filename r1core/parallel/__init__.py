"""Parallel layouts and where a rank sits in them.

- :mod:`r1core.parallel.layout`: :class:`ParallelConfig` (the run's ``parallel`` section),
  :func:`resolve_layout` and :func:`check_model_fits` (Megatron-Core's rules, checked before
  any process starts), :class:`LayoutError`, the vocabulary padding.
- :mod:`r1core.parallel.topology`: :class:`Topology`, this rank's place among the trainer's
  data-parallel replicas, and the collectives the RL loop uses.
- :mod:`r1core.parallel.groups`: creating and destroying the process groups (megatron-core).

Importing this package needs torch only.
"""

from r1core.parallel.layout import (
    LayoutError,
    ParallelConfig,
    ParallelLayout,
    check_divisible,
    check_model_fits,
    padded_vocab_size,
    resolve_layout,
)
from r1core.parallel.topology import Topology, even_slices, shard, shard_slice, without_torchrun_env

__all__ = [
    "LayoutError",
    "ParallelConfig",
    "ParallelLayout",
    "Topology",
    "check_divisible",
    "check_model_fits",
    "even_slices",
    "padded_vocab_size",
    "resolve_layout",
    "shard",
    "shard_slice",
    "without_torchrun_env",
]
