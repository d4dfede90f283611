"""Capture and restore every random-number generator a training step can draw from.

Python's ``random``, NumPy's legacy global generator, torch's CPU generator and (when CUDA
is present) every CUDA device's generator. The captured state holds only tensors, ints,
floats, strings, lists and dicts, so a checkpoint holding it loads with
``torch.load(weights_only=True)`` and no pickled code runs on load.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """Snapshot of all global RNG states (see module docstring for which)."""
    python_version, python_internal, python_gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": python_version, "internal": list(python_internal), "gauss": python_gauss},
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            # uint32 key array -> int64 tensor: tensors load with weights_only=True.
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch_cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put every generator back to ``state`` (from :func:`capture_rng_state`).

    Raises:
        ValueError: the state holds CUDA generators but this process has a different
            number of CUDA devices (restoring would silently skip some).
    """
    cuda_states = state.get("torch_cuda")
    # Check before touching any generator, so a refused restore changes nothing.
    if cuda_states is not None:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available != len(cuda_states):
            raise ValueError(
                f"checkpoint holds RNG states of {len(cuda_states)} CUDA devices, "
                f"this process sees {available}"
            )
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch_cpu"])
    if cuda_states is not None:
        torch.cuda.set_rng_state_all(cuda_states)
