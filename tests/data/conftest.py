import pytest

from r1core.data import data_dir


@pytest.fixture(scope="session")
def shared_data():
    """The shipped benchmark folder; its absence is a packaging error, not a reason to skip."""
    root = data_dir()
    if not (root / "gsm8k" / "test.jsonl").is_file():
        pytest.fail(f"benchmark data not found at {root}; the package data was not installed")
    return root
