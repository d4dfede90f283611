"""Fixtures of the compiled-extension tests.

The extension is part of the README set-up, so a missing or stale ``r1core._C`` fails these
tests loudly (with the rebuild command) instead of skipping them; only a build made with
``R1CORE_SKIP_EXTENSION=1`` skips them.
"""

import os
import sys
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cpp():
    """The loaded ``r1core.ops._cpp`` module (raises ExtensionError if the build is unusable)."""
    if os.environ.get("R1CORE_SKIP_EXTENSION") == "1":
        pytest.skip("r1core was installed without its compiled extension (R1CORE_SKIP_EXTENSION=1)")
    from r1core.ops import _cpp

    return _cpp


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def run_python():
    """Runs code in a fresh interpreter (import-order and fallback checks need one)."""

    def run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, **(env or {}))
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=REPO_ROOT, timeout=300)

    return run
