"""Backend registry and selection for r1core ops.

Every op has implementations under the same names: ``reference`` (plain PyTorch, any device),
``triton`` (CUDA, or CPU under ``TRITON_INTERPRET=1``), ``cpp`` (the compiled extension's CPU
kernels) and ``cuda`` (its CUDA kernels). ``fused_logprobs`` also has ``triton-persistent``,
a second Triton design (``kernels/fused_logprobs_persistent.py``) that is selectable by name
and not chosen automatically until a GPU measurement puts it ahead. An op module registers each implementation it has
with :func:`register_impl`; :func:`resolve` picks one for a call.
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any, Callable

import torch

BACKENDS = ("reference", "triton", "triton-persistent", "cpp", "cuda")

# Automatic choice, best first, per device type, with per-op exceptions. The order follows
# the measured results in perf/results/: on CUDA the Triton kernels are the tuned path (the
# CUDA kernels have not been measured against them yet); on CPU the compiled kernels win for
# grpo_loss and group_advantages at 1 and 2 threads, but fused_logprobs forward+backward
# loses to the reference's multi-threaded GEMMs at 2 threads
# (cpp_backend_threads{1,2}_cpu_2026-11-22.md), and training is forward+backward.
PREFERENCE: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "cuda", "reference"),
    "cpu": ("cpp", "reference"),
}
OP_PREFERENCE: dict[tuple[str, str], tuple[str, ...]] = {
    ("fused_logprobs", "cpu"): ("reference", "cpp"),
}


def preference(op: str, device_type: str) -> tuple[str, ...]:
    """Backends to try for ``op`` on ``device_type``, best first."""
    return OP_PREFERENCE.get((op, device_type), PREFERENCE.get(device_type, ("reference",)))

_IMPLS: dict[str, dict[str, Any]] = {}
_LOADERS: dict[str, str] = {
    "triton": "r1core.ops._triton",
    "triton-persistent": "r1core.ops._triton",
    "cpp": "r1core.ops._cpp",
    "cuda": "r1core.ops._cpp",
}
_load_errors: dict[str, str] = {}
_loaded: set[str] = set()
_warned: set[str] = set()


def register_impl(op: str, backend: str, impl: Any) -> None:
    """Record ``impl`` as the implementation of ``op`` for ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    _IMPLS.setdefault(op, {})[backend] = impl


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _load(backend: str) -> None:
    module = _LOADERS.get(backend)
    # Checked before importing so that a resolved backend costs nothing per call and
    # torch.compile(fullgraph=True) never meets importlib while tracing an op.
    if module is None or backend in _loaded or backend in _load_errors:
        return
    try:
        importlib.import_module(module)
        _loaded.add(backend)
    except ModuleNotFoundError as error:
        if error.name != module:
            _load_errors[backend] = f"{type(error).__name__}: {error}"
        else:  # this backend is not part of this build at all: nothing to warn about
            _load_errors[backend] = "not part of this build"
            _warned.add(backend)
    except Exception as error:  # a missing triton or a stale extension must not break imports
        _load_errors[backend] = f"{type(error).__name__}: {error}"


def _usable(op: str, backend: str, device: torch.device) -> str | None:
    """Return None if ``backend`` can run ``op`` on ``device``, else the reason it cannot."""
    if backend != "reference":
        _load(backend)
    if backend in _load_errors:
        return f"the {backend} backend failed to load ({_load_errors[backend]})"
    if backend not in _IMPLS.get(op, {}):
        return f"the {backend} backend has no implementation of {op}"
    if backend.startswith("triton") and device.type != "cuda" and not triton_interpret():
        return "Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 to run them on CPU)"
    if backend == "cpp" and device.type != "cpu":
        return "the cpp backend runs on CPU tensors only"
    if backend == "cuda" and device.type != "cuda":
        return "the cuda backend runs on CUDA tensors only"
    return None


def available(op: str, device: torch.device | str) -> list[str]:
    """Backends that can run ``op`` on ``device``, in automatic-preference order."""
    device = torch.device(device)
    order = preference(op, device.type)
    rest = tuple(b for b in BACKENDS if b not in order)
    return [b for b in order + rest if _usable(op, b, device) is None]


def resolve(op: str, backend: str | None, device: torch.device) -> tuple[str, Any]:
    """Pick the implementation of ``op`` for a call on ``device``.

    ``backend=None`` (or ``"auto"``) takes the first usable backend in :data:`PREFERENCE`;
    when a preferred compiled backend is missing or stale, a one-time warning says why.
    A named backend that cannot run raises ``RuntimeError`` with the reason.
    """
    if backend in (None, "auto"):
        for candidate in preference(op, device.type):
            reason = _usable(op, candidate, device)
            if reason is None:
                return candidate, _IMPLS[op][candidate]
            if candidate in _load_errors and candidate not in _warned:
                _warned.add(candidate)
                warnings.warn(f"r1core: falling back from {candidate}: {reason}", stacklevel=3)
        raise RuntimeError(f"no backend of r1core can run {op} on {device}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: auto, {', '.join(BACKENDS)}")
    reason = _usable(op, backend, device)
    if reason is not None:
        raise RuntimeError(f"backend={backend!r} cannot run {op} on {device}: {reason}")
    return backend, _IMPLS[op][backend]


Impl = Callable[..., Any]
