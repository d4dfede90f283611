"""Every attack of sandbox_attacks.py is blocked, as the caller (root in CI) and as ``nobody``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import sandbox_attacks

pytestmark = pytest.mark.usefixtures("sandbox")
REPO = Path(__file__).resolve().parents[2]
ISSUE_ATTACKS = {"read_shadow", "delete_checkpoint", "kill_caller_and_parent", "read_caller_environ",
                 "write_caller_memory", "fork_bomb_500", "double_fork_setsid", "write_host_tmp", "network_internet"}


def test_catalogue_covers_the_known_attacks():
    names = [attack.name for attack in sandbox_attacks.ATTACKS]
    assert len(names) == len(set(names))
    assert ISSUE_ATTACKS <= set(names)
    assert len(names) >= 30


@pytest.mark.parametrize("attack", sandbox_attacks.ATTACKS, ids=lambda attack: attack.name)
def test_attack_is_blocked(attack):
    outcome = sandbox_attacks.run_attack(attack)
    assert outcome.problem is None, outcome


def test_a_failed_check_is_reported():
    # The judge can fail: a program that says it escaped, and the secret read by a program the
    # config explicitly leaves unisolated, are caught.
    escaped = sandbox_attacks.Attack("escaped", "", "print('ESCAPED test')", "", sandbox_attacks.no_escape)
    assert sandbox_attacks.run_attack(escaped).problem is not None
    unisolated = sandbox_attacks.SandboxConfig(isolation="none")
    secret = next(a for a in sandbox_attacks.ATTACKS if a.name == "read_secret_file")
    outcome = sandbox_attacks.run_attack(secret, unisolated)
    assert outcome.problem is not None and "secret" in outcome.problem


def _copy_for_nobody(target: Path) -> Path:
    """The package and the catalogue in a folder user nobody can read (CI's clone may not be)."""
    for package in ("r1core",):
        shutil.copytree(REPO / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (target / "tests" / "rewards").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "rewards" / "sandbox_attacks.py", target / "tests" / "rewards")
    for directory, _, _ in os.walk(target):
        os.chmod(directory, 0o755)
    return target / "tests" / "rewards" / "sandbox_attacks.py"


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as user nobody needs root")
def test_attacks_are_blocked_for_an_unprivileged_caller():
    # The caller itself unprivileged: bubblewrap runs without any privilege and the process
    # limit is RLIMIT_NPROC in the run's user namespace. The system interpreter runs it (the
    # virtual environment's may sit in a private home folder).
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3")
    work = Path(tempfile.mkdtemp(prefix="r1core-attacks-as-nobody-"))
    try:
        script = _copy_for_nobody(work)
        completed = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", "/usr/bin/python3", "-I", str(script)],
            capture_output=True, text=True, timeout=900, cwd="/", env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        )
    finally:
        shutil.rmtree(work)
    assert completed.returncode in (0, 1), completed.stderr[-2000:]
    outcomes = json.loads(completed.stdout)
    assert {item["name"] for item in outcomes} == {attack.name for attack in sandbox_attacks.ATTACKS}
    failed = [item for item in outcomes if item["problem"] is not None]
    assert failed == [], failed
    assert completed.returncode == 0, completed.stderr[-2000:]
