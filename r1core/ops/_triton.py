"""Loads the Triton implementations; each module registers its custom ops and backend.

Imported lazily by ``_backend`` the first time an op considers the ``triton`` backend, so
``import r1core.ops`` works without triton installed.
"""

import importlib

import triton  # noqa: F401  (fail here, with a clear ImportError, when triton is absent)

for _module in ("fused_logprobs_triton", "group_advantages_triton", "grpo_loss_triton"):
    try:
        importlib.import_module(f"r1core.ops.{_module}")
    except ModuleNotFoundError as _error:
        if _error.name != f"r1core.ops.{_module}":
            raise
