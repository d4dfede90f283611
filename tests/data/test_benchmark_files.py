"""The benchmarks ship inside the package: unchanged copies with their licences, loadable by
name wherever r1core is installed (no shared folder, no environment variable)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from r1core.data import data_dir, load_benchmark
from r1core.data.benchmarks import BENCHMARKS

ROOT = data_dir()
# The benchmark folder of this project's machines (a ``shared/data`` beside a parent of the
# repository), where the copies came from.
ORIGINALS = next((parent / "shared" / "data" for parent in Path(__file__).resolve().parents
                  if (parent / "shared" / "data" / "gsm8k").is_dir()), None)


def manifest() -> dict[str, str]:
    """``file -> sha256`` from the README's table."""
    rows = re.findall(r"^\| (\S+\.jsonl) \| ([0-9a-f]{64}) \|$", (ROOT / "README.md").read_text(), re.MULTILINE)
    return dict(rows)


def test_data_dir_is_inside_the_package():
    import r1core

    assert ROOT.is_dir() and ROOT.resolve().is_relative_to(Path(r1core.__file__).resolve().parent)


def test_every_split_is_listed_with_its_checksum_and_matches_it():
    listed = manifest()
    expected = {f"{spec.folder}/{split}.jsonl" for spec in BENCHMARKS.values() for split in spec.splits}
    assert set(listed) == expected
    for name, digest in listed.items():
        assert hashlib.sha256((ROOT / name).read_bytes()).hexdigest() == digest, name


def test_every_benchmark_folder_carries_its_licence_or_notice():
    for spec in BENCHMARKS.values():
        folder = ROOT / spec.folder
        notices = [p for p in (folder / "LICENSE", folder / "NOTICE") if p.is_file()]
        assert notices, f"{folder} has no LICENSE or NOTICE"
        assert len(notices[0].read_text()) > 200


def test_package_data_is_declared_for_installation():
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    section = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    for pattern in ("benchmark_files/*/*.jsonl", "benchmark_files/*/LICENSE", "benchmark_files/*/NOTICE",
                    "benchmark_files/README.md"):
        assert pattern in section, pattern


@pytest.mark.skipif(ORIGINALS is None, reason="no shared/data folder above the repository to compare the copies with")
def test_copies_equal_the_originals():
    for name in manifest():
        assert (ROOT / name).read_bytes() == (ORIGINALS / name).read_bytes(), name


def test_loading_by_name_needs_no_environment(monkeypatch):
    monkeypatch.delenv("R1CORE_DATA_DIR", raising=False)
    monkeypatch.chdir("/")
    assert len(load_benchmark("amc23")) == 40
    assert len(load_benchmark("gsm8k", "train")) == 7473
