"""RewardPool with real hangs, crashes and exceptions: the caller gets 0 and a reason, the pool
replaces the worker and keeps scoring, and nothing is left running afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import faulty_rewards
import pytest

from r1core.rewards import (
    RewardPool,
    RewardPoolConfig,
    RewardPoolError,
    compose_rewards,
    get_reward,
)

# No preload for the faulty rewards: workers start in ~0.1 s instead of ~1 s.
FAST = RewardPoolConfig(num_workers=2, sample_timeout_s=2.0, chunk_size=4, preload=(),
                        memory_limit_mb=1024)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] != "Z"


def test_faults_score_zero_with_reasons_and_pool_recovers():
    responses = ["ok", "hang", "ok", "exit", "raise", "ok", "segfault", "nan", "spin", "ok"]
    with RewardPool(FAST) as pool:
        started = time.monotonic()
        result = pool.score(faulty_rewards.faulty, responses, [""] * len(responses))
        elapsed = time.monotonic() - started
        expected = [1.0 if r == "ok" else 0.0 for r in responses]
        assert result.scores == expected
        reasons = dict(zip(responses, result.reasons))
        assert reasons["ok"] is None
        assert reasons["hang"] == "timeout after 2 s"
        assert reasons["spin"] == "timeout after 2 s"
        assert reasons["exit"] == "worker died (exit code 3)"
        assert reasons["segfault"] == "worker died (SIGSEGV)"
        assert reasons["raise"] == "ValueError: this reward always raises"
        assert reasons["nan"] == "non-finite reward nan"
        assert result.num_failed == 6
        # Two timeouts of 2 s on two workers, plus restarts: far below one timeout per sample.
        assert elapsed < 12, elapsed
        # The pool keeps scoring after the faults, with the same number of live workers.
        again = pool.score(faulty_rewards.faulty, ["ok"] * 9, [""] * 9)
        assert again.scores == [1.0] * 9 and again.num_failed == 0
        assert len(pool.worker_pids()) == 2


def test_memory_hog_is_contained():
    config = RewardPoolConfig(num_workers=1, sample_timeout_s=20.0, preload=(), memory_limit_mb=512)
    with RewardPool(config) as pool:
        result = pool.score(faulty_rewards.faulty, ["memory", "ok"], ["", ""])
    assert result.scores == [0.0, 1.0]
    assert result.reasons[0] is not None and "Memory" in result.reasons[0]


def test_only_the_hung_sample_is_lost_from_its_chunk():
    # One worker, one chunk of 6 with the hang in the middle: the samples after it are
    # re-queued to the replacement worker, not failed.
    config = RewardPoolConfig(num_workers=1, sample_timeout_s=1.0, chunk_size=6, preload=())
    responses = ["ok", "ok", "hang", "ok", "ok", "ok"]
    with RewardPool(config) as pool:
        result = pool.score(faulty_rewards.faulty, responses, [""] * 6)
    assert result.scores == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert result.reasons[2] == "timeout after 1 s"


def test_timeout_is_per_sample_not_per_chunk():
    # Eight samples of 0.4 s in one chunk take 3.2 s, above the 1 s timeout, and all pass.
    config = RewardPoolConfig(num_workers=1, sample_timeout_s=1.0, chunk_size=8, preload=())
    with RewardPool(config) as pool:
        result = pool.score(faulty_rewards.slow_ok, ["ok"] * 8, ["0.4"] * 8)
    assert result.scores == [1.0] * 8 and result.num_failed == 0


def test_close_leaves_no_processes_and_rejects_work():
    pool = RewardPool(FAST)
    pool.score(faulty_rewards.faulty, ["ok"], [""])  # make sure the workers are up
    pids = pool.worker_pids()
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    pool.close()
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        pool.score(faulty_rewards.faulty, ["ok"], [""])


def test_close_while_a_sample_hangs():
    pool = RewardPool(RewardPoolConfig(num_workers=1, sample_timeout_s=60.0, preload=()))
    future = pool.submit([faulty_rewards.faulty], [(0, "ok", "")])
    future.result(timeout=60)
    pids = pool.worker_pids()
    hung = pool.submit([faulty_rewards.faulty], [(0, "hang", "")])
    time.sleep(0.5)
    closer = threading.Thread(target=pool.close)
    closer.start()
    # close() waits for the batch in flight; the worker's timeout ends it.
    closer.join(timeout=1.0)
    assert closer.is_alive()  # still waiting for the hung batch (60 s timeout)
    for pid in pids:
        os.kill(pid, 9)  # simulate the timeout firing early
    closer.join(timeout=30)
    assert not closer.is_alive()
    result = hung.result(timeout=1)
    assert (result.scores, result.reasons) == ([0.0], ["worker died (SIGKILL)"])
    assert not any(_alive(pid) for pid in pool.worker_pids() + pids)


def test_composite_through_pool_isolates_each_component():
    composite = compose_rewards({"math_accuracy": 1.0, "r1_format": 0.5})
    responses = ["<think>half</think><answer>\\frac{1}{2}</answer>", "\\boxed{7}", "nothing"]
    golds = ["0.5", "7", "3"]
    config = RewardPoolConfig(num_workers=2, sample_timeout_s=30.0)
    with RewardPool(config) as pool:
        result = pool.score_composite(composite, responses, golds)
    assert result.components == {"math_accuracy": [1.0, 1.0, 0.0], "r1_format": [1.0, 0.0, 0.0]}
    assert result.totals == [1.5, 1.0, 0.0]
    assert result.totals == composite(responses, golds)
    assert all(reason is None for reasons in result.reasons.values() for reason in reasons)


def test_bad_rewards_give_clear_errors():
    with RewardPool(FAST) as pool:
        with pytest.raises(TypeError, match="picklable"):
            pool.score(lambda responses, golds: [1.0] * len(responses), ["a"], ["b"])
        with pytest.raises(ValueError, match="differ in length"):
            pool.score(get_reward("r1_format"), ["a", "b"], ["c"])
        # After a rejected call the pool still works.
        assert pool.score(faulty_rewards.faulty, ["ok"], [""]).scores == [1.0]


def test_failing_preload_raises_pool_error():
    config = RewardPoolConfig(num_workers=1, preload=("no_such_module_for_r1core_tests",))
    with RewardPool(config) as pool:
        with pytest.raises(RewardPoolError, match="no_such_module_for_r1core_tests"):
            pool.score(faulty_rewards.faulty, ["ok"], [""])


def test_submit_is_bounded_and_ordered():
    config = RewardPoolConfig(num_workers=1, preload=(), max_pending_batches=1)
    with RewardPool(config) as pool:
        futures = [pool.submit([faulty_rewards.slow_ok], [(0, "ok", "1.0")])]
        time.sleep(0.3)  # the dispatcher takes the first batch: the queue is empty again
        futures.append(pool.submit([faulty_rewards.slow_ok], [(0, "ok", "0.0")]))  # fills it
        third = threading.Thread(
            target=lambda: futures.append(pool.submit([faulty_rewards.slow_ok], [(0, "ok", "0.0")]))
        )
        third.start()
        third.join(timeout=0.3)
        assert third.is_alive()  # blocked: one batch running, one waiting
        third.join(timeout=60)
        results = [future.result(timeout=60) for future in futures]
        assert [(result.scores, result.reasons) for result in results] == [([1.0], [None])] * 3


def test_killed_caller_leaves_no_orphan_workers(tmp_path):
    # A caller SIGKILLed while its worker hangs: the kernel kills the worker (PDEATHSIG).
    script = tmp_path / "caller.py"
    script.write_text(
        "import os, sys, time\n"
        "sys.path.insert(0, %r)\n"
        "import faulty_rewards\n"
        "from r1core.rewards import RewardPool, RewardPoolConfig\n"
        "pool = RewardPool(RewardPoolConfig(num_workers=1, sample_timeout_s=600, preload=()))\n"
        "pool.score(faulty_rewards.faulty, ['ok'], [''])\n"
        "print(pool.worker_pids()[0], flush=True)\n"
        "pool.submit([faulty_rewards.faulty], [(0, 'hang', '')])\n"
        "time.sleep(1.0)\n"
        "os.kill(os.getpid(), 9)\n" % os.path.dirname(faulty_rewards.__file__)
    )
    completed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == -9, completed.stderr
    worker_pid = int(completed.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive_any(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive_any(worker_pid)


def _alive_any(pid: int) -> bool:
    # The orphaned worker is re-parented (not our child), so kill(0) + /proc state tells.
    try:
        return _alive(pid)
    except FileNotFoundError:
        return False


def test_workers_are_recycled_after_max_samples():
    config = RewardPoolConfig(num_workers=1, chunk_size=2, preload=(), max_samples_per_worker=4)
    with RewardPool(config) as pool:
        pool.score(faulty_rewards.faulty, ["ok"], [""])
        first = pool.worker_pids()
        result = pool.score(faulty_rewards.faulty, ["ok"] * 10, [""] * 10)
        assert result.scores == [1.0] * 10 and result.num_failed == 0
        assert pool.worker_pids() != first


def test_concurrent_callers_each_get_their_own_scores():
    with RewardPool(FAST) as pool:
        outputs: dict[int, list[float]] = {}

        def call(index: int) -> None:
            responses = ["ok" if (i + index) % 3 else "raise" for i in range(12)]
            outputs[index] = pool.score(faulty_rewards.faulty, responses, [""] * 12).scores

        threads = [threading.Thread(target=call, args=(index,)) for index in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    for index in range(3):
        assert outputs[index] == [1.0 if (i + index) % 3 else 0.0 for i in range(12)]


def _marked_processes(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read().split(b"\0") and _alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _wait_gone(marker: str, timeout_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := _marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("fault", ["hang", "hang-setsid"])
def test_timeout_kills_what_the_reward_started(fault):
    # A reward starts a child (in the worker's group, or in a session of its own) and hangs:
    # the sample times out and the child dies with the worker.
    marker = f"r1core-pool-test-{os.getpid()}-{fault}"
    config = RewardPoolConfig(num_workers=1, sample_timeout_s=1.5, preload=())
    with RewardPool(config) as pool:
        result = pool.score(faulty_rewards.spawning, [fault], [marker])
        assert result.reasons == ["timeout after 1.5 s"]
        assert _wait_gone(marker) == []


def test_close_kills_daemons_and_children_of_rewards():
    marker = f"r1core-pool-test-{os.getpid()}-close"
    pool = RewardPool(RewardPoolConfig(num_workers=2, preload=()))
    result = pool.score(faulty_rewards.spawning, ["daemon", "child"], [marker, marker])
    assert result.scores == [1.0, 1.0]
    deadline = time.monotonic() + 10  # the daemon execs after the reward returned
    while len(_marked_processes(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_marked_processes(marker)) == 2  # a setsid daemon and a plain child, both running
    pool.close()
    assert _wait_gone(marker) == []


def test_per_batch_timeouts():
    config = RewardPoolConfig(num_workers=1, sample_timeout_s=0.5, preload=())
    with RewardPool(config) as pool:
        assert pool.score(faulty_rewards.slow_ok, ["ok"], ["1.0"]).reasons == ["timeout after 0.5 s"]
        assert pool.score(faulty_rewards.slow_ok, ["ok"], ["1.0"], sample_timeout_s=5.0).scores == [1.0]
        with pytest.raises(ValueError, match="one positive value per reward"):
            pool.submit([faulty_rewards.slow_ok], [(0, "ok", "0")], sample_timeout_s=[1.0, 2.0])


def test_exceptions_travel_with_the_result():
    with RewardPool(FAST) as pool:
        result = pool.score(faulty_rewards.faulty, ["ok", "raise"], ["", ""])
    assert result.scores == [1.0, 0.0]
    assert result.errors[0] is None and isinstance(result.errors[1], ValueError)
    with pytest.raises(ValueError, match="always raises"):
        result.raise_first_error()
