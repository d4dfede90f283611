"""Make this folder's helper modules (faulty_rewards, perf_scripts) importable under any pytest
import mode; the pool's worker processes find them through the same sys.path entry."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


import os  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sandbox() -> None:
    """Skip when the code sandbox cannot run here and this user could not have fixed that; as
    root (CI), `make` installs what it needs, so a failure there is an error, not a skip."""
    from r1core.rewards.sandbox import SandboxConfig, SandboxError, isolation_plan

    try:
        isolation_plan(SandboxConfig())
    except SandboxError as error:
        if os.geteuid() == 0:
            raise
        pytest.skip(f"code sandbox unavailable for this user: {error}")
