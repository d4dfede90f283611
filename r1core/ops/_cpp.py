"""The compiled backends ``cpp`` (CPU kernels) and ``cuda`` (CUDA kernels) of r1core's ops.

Imported lazily by ``_backend`` the first time an op considers either backend. Importing
``r1core._C`` runs its ``TORCH_LIBRARY`` registrations (``torch.ops.r1core.*``, one schema
per op, a kernel per dispatch key); this module checks that the build is current, adds the
fake (meta) implementations that let ``torch.compile`` trace the ops, and registers thin
wrappers with the signatures of the reference primitives. Autograd, tensor-parallel
all-reduces and loss aggregation stay in the Python op modules and serve every backend.

A missing, stale or unloadable build raises :class:`ExtensionError` here; ``_backend``
turns that into a one-time warning and falls back to Triton or the reference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from r1core.ops import _backend, _build_config
from r1core.ops.group_advantages import GroupAdvantages
from r1core.ops.grpo_loss import ClipParams, GRPOLossImpl
from r1core.ops.fused_logprobs import LogprobsImpl

REBUILD = "run `pip install --no-build-isolation -e .` in the r1core checkout"
_CAPABILITY_RANK = {"default": 0, "avx2": 1, "avx512": 2}


class ExtensionError(RuntimeError):
    """r1core._C is missing, stale, or cannot run on this machine."""


def recorded_source_dir(info: dict[str, Any]) -> Path | None:
    """The ``csrc`` folder the build was compiled from, as ``setup.py`` recorded it, if that
    folder still exists (a development install); None for an installed wheel, which then
    needs nothing outside the package."""
    source_dir = str(info.get("source_dir") or "")
    return Path(source_dir) if source_dir and Path(source_dir).is_dir() else None


def build_problem(info: dict[str, Any], csrc_dir: Path | None = None, torch_version: str | None = None) -> str | None:
    """Why the build described by ``info`` (``r1core._C.build_info()``) must not be used, or
    None. Compares the torch it was compiled against, the hash of the sources (those in
    ``csrc_dir``, by default the folder the build recorded, when it still exists) and the
    CPU's vector ISA."""
    torch_version = torch.__version__ if torch_version is None else torch_version
    csrc_dir = recorded_source_dir(info) if csrc_dir is None else csrc_dir
    if info.get("torch_version") != torch_version:
        return f"r1core._C was built against torch {info.get('torch_version')}, but torch {torch_version} is installed: {REBUILD}"
    if csrc_dir is not None and Path(csrc_dir).is_dir():
        current = _build_config.source_hash(Path(csrc_dir), bool(info.get("has_cuda")))
        if current != info.get("source_hash"):
            return (
                f"r1core._C is stale: the sources in {csrc_dir} changed since it was built "
                f"(built from {info.get('source_hash')}, sources are now {current}): {REBUILD}"
            )
    needed = _CAPABILITY_RANK.get(str(info.get("cpu_capability", "default")), 0)
    have = _CAPABILITY_RANK.get(torch.backends.cpu.get_cpu_capability().lower(), 0)
    if needed > have:
        return (
            f"r1core._C was compiled for {info.get('cpu_capability')} but this CPU supports "
            f"{torch.backends.cpu.get_cpu_capability()}: rebuild with R1CORE_CPU_CAPABILITY=default"
        )
    return None


def load_extension() -> Any:
    """Import r1core._C and check it; raises :class:`ExtensionError` with the remedy."""
    try:
        from r1core import _C
    except ModuleNotFoundError as error:
        if error.name != "r1core._C":
            raise ExtensionError(f"r1core._C could not be imported ({error}): {REBUILD}") from error
        raise ExtensionError(f"r1core._C is not built: {REBUILD}") from error
    except ImportError as error:  # typically undefined symbols: built against another torch
        raise ExtensionError(f"r1core._C failed to load ({error}); it was probably built against another torch: {REBUILD}") from error
    problem = None if os.environ.get("R1CORE_ALLOW_STALE_EXTENSION") == "1" else build_problem(_C.build_info())
    if problem is not None:
        raise ExtensionError(problem)
    return _C


_C = load_extension()
BUILD_INFO: dict[str, Any] = dict(_C.build_info())
ops = torch.ops.r1core


# --- fake (meta) implementations: shapes and dtypes only, for torch.compile / FakeTensor ----


def _accumulation_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


@torch.library.register_fake("r1core::logprobs_stats")
def _logprobs_stats_fake(hidden, weight, labels, inv_temperature, need_entropy):
    return hidden.new_empty((4, hidden.shape[0]), dtype=_accumulation_dtype(hidden))


@torch.library.register_fake("r1core::logprobs_backward")
def _logprobs_backward_fake(hidden, weight, labels, lse, entropy, grad_logp, grad_entropy, inv_temperature):
    return hidden.new_empty(hidden.shape), weight.new_empty(weight.shape)


@torch.library.register_fake("r1core::grpo_row_stats")
def _grpo_row_stats_fake(logp, old_logp, advantages, mask, ref_logp, rollout_logp, *scalars):
    return logp.new_empty((logp.shape[0], 8), dtype=_accumulation_dtype(logp))


@torch.library.register_fake("r1core::grpo_row_backward")
def _grpo_row_backward_fake(grad_pg_rows, grad_kl_rows, logp, *rest):
    return logp.new_empty(logp.shape, dtype=_accumulation_dtype(logp))


@torch.library.register_fake("r1core::group_advantages")
def _group_advantages_fake(rewards, group_ids, mode, eps):
    return rewards.new_empty(rewards.shape, dtype=_accumulation_dtype(rewards)), rewards.new_empty(rewards.shape, dtype=torch.bool)


@torch.library.register_fake("r1core::group_advantages_fixed")
def _group_advantages_fixed_fake(rewards, group_size, mode, eps):
    return rewards.new_empty(rewards.shape, dtype=_accumulation_dtype(rewards)), rewards.new_empty(rewards.shape, dtype=torch.bool)


# --- the primitives, with the reference functions' signatures -----------------------------


def logprobs_stats(hidden, weight, labels, inv_temperature: float, need_entropy: bool) -> torch.Tensor:
    """See ``logprobs_stats_reference``: float32 (float64) ``[4, N]``."""
    return ops.logprobs_stats(hidden, weight, labels, float(inv_temperature), bool(need_entropy))


def logprobs_backward(hidden, weight, labels, lse, entropy, grad_logp, grad_entropy, inv_temperature: float):
    """See ``logprobs_backward_reference``: ``(grad_hidden, grad_weight)`` in the inputs' dtypes."""
    grad_hidden, grad_weight = ops.logprobs_backward(
        hidden, weight, labels, lse, entropy, grad_logp, grad_entropy, float(inv_temperature)
    )
    return grad_hidden, grad_weight


def _clip_args(params: ClipParams) -> tuple[float, float, float, int, float]:
    return params.clip_low, params.clip_high, params.dual_clip, params.kl_estimator, params.is_cap


def grpo_row_stats(logp, old_logp, advantages, mask, ref_logp, rollout_logp, params: ClipParams) -> torch.Tensor:
    """See ``grpo_row_stats_reference``: float32 (float64) ``[B, 8]``."""
    return ops.grpo_row_stats(logp, old_logp, advantages, mask, ref_logp, rollout_logp, *_clip_args(params))


def grpo_row_backward(grad_pg_rows, grad_kl_rows, logp, old_logp, advantages, mask, ref_logp, rollout_logp, params: ClipParams):
    """See ``grpo_row_backward_reference``: float32 (float64) ``[B, T]``."""
    return ops.grpo_row_backward(
        grad_pg_rows, grad_kl_rows, logp, old_logp, advantages, mask, ref_logp, rollout_logp, *_clip_args(params)
    )


class GroupAdvantagesImpl:
    """``(rewards [B], dense group_ids [B], mode, eps) -> GroupAdvantages``, plus the
    contiguous equal-size case without group ids (:meth:`fixed_size`)."""

    def __call__(self, rewards: torch.Tensor, group_ids: torch.Tensor, mode: str, eps: float) -> GroupAdvantages:
        return GroupAdvantages(*ops.group_advantages(rewards, group_ids, mode, float(eps)))

    def fixed_size(self, rewards: torch.Tensor, group_size: int, mode: str, eps: float) -> GroupAdvantages:
        return GroupAdvantages(*ops.group_advantages_fixed(rewards, int(group_size), mode, float(eps)))


BACKENDS = ("cpp", "cuda") if BUILD_INFO["has_cuda"] else ("cpp",)
for _name in BACKENDS:
    _backend.register_impl("fused_logprobs", _name, LogprobsImpl(logprobs_stats, logprobs_backward))
    _backend.register_impl("grpo_loss", _name, GRPOLossImpl(grpo_row_stats, grpo_row_backward))
    _backend.register_impl("group_advantages", _name, GroupAdvantagesImpl())
