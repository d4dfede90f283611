"""The coverage table of ``--family-coverage`` reports what the marked tests did: passes,
failures, skips with their reasons, tests that never ran, checks without a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

CONFTEST = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(HERE)!r})
from family_coverage import FamilyCoverage

def pytest_configure(config):
    config.addinivalue_line("markers", "family_check: see family_coverage.py")
    config.pluginmanager.register(FamilyCoverage(Path("table.md")), "family-coverage")
"""

TESTS = """
import pytest

@pytest.mark.family_check("logprobs vs transformers")
@pytest.mark.parametrize("kind", ["aa", pytest.param("bb_vllm", marks=pytest.mark.skip(reason="bb needs X")), "cc"])
def test_logprobs(kind):
    assert kind != "cc"

@pytest.mark.family_check("export bit-exact")
@pytest.mark.parametrize("kind", ["aa", "bb"])
def test_export(kind):
    if kind == "aa":
        pytest.skip("aa has no Y")

@pytest.mark.family_check("refused with reason", family="bb")
def test_refused():
    pass

def test_unmarked():
    raise AssertionError("not part of the table")
"""


def test_table_reports_outcomes(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_fake.py").write_text(TESTS)
    # --deselect: a marked test that does not run is "not run", never a pass.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--deselect", "test_fake.py::test_refused", "test_fake.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # test_logprobs[cc] and test_unmarked fail
    table = (tmp_path / "table.md").read_text()
    assert table in proc.stdout
    lines = table.splitlines()
    assert lines[0] == ("| family | logprobs vs transformers | gradients vs transformers | export bit-exact | "
                        "vLLM greedy after sync | TP=2 / EP=2 | refused with reason |")
    assert lines[2] == "| aa | pass | - | skip [1] | - | - | - |"
    assert lines[3] == "| bb | skip [2] | - | pass | - | - | not run |"
    assert lines[4] == "| cc | FAIL | - | - | - | - | - |"
    assert lines[6:] == ["- [1] aa has no Y", "- [2] bb needs X"]


def test_deselected_marked_test_is_not_run(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_fake.py").write_text(TESTS)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "-x", "test_fake.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    table = (tmp_path / "table.md").read_text().splitlines()
    # -x stops at test_logprobs[cc]: bb's export and refusal were collected but never ran.
    assert table[2] == "| aa | pass | - | not run | - | - | - |"
    assert table[3] == "| bb | skip [1] | - | not run | - | - | not run |"
