"""Import perf/reward_agreement.py and perf/adversarial_answers.py for the tests (perf/ is not a
package; the tests share the scripts' data loading and input factories)."""

from __future__ import annotations

import sys
from pathlib import Path

PERF_DIR = Path(__file__).resolve().parents[2] / "perf"
if str(PERF_DIR) not in sys.path:
    sys.path.insert(0, str(PERF_DIR))

import adversarial_answers  # noqa: E402
import reward_agreement  # noqa: E402

__all__ = ["adversarial_answers", "reward_agreement"]
