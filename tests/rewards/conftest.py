"""Make this folder's helper modules (faulty_rewards, perf_scripts) importable under any pytest
import mode; the pool's worker processes find them through the same sys.path entry."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
