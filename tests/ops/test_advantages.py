"""group_advantages: hand-computed cases, the reference against an independent loop
implementation, and every backend usable here against the reference."""

from __future__ import annotations

import math

import pytest
import torch

from r1core.ops import available, group_advantages, group_advantages_reference
from r1core.ops.group_advantages import MODES, dense_group_index
from r1core.testing import assert_close_to_reference, make_group_rewards

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CASES = [(device, backend) for device in DEVICES for backend in available("group_advantages", device)]
IDS = [f"{device}-{backend}" for device, backend in CASES]
HAS_TRITON = any(backend == "triton" for _, backend in CASES)


def loop_advantages(rewards: list[float], group_ids: list[int], mode: str, eps: float = 1e-6):
    """Independent specification: one Python loop per group, float64 (``statistics``-style
    sample std), no tensors."""
    groups: dict[int, list[int]] = {}
    for index, group in enumerate(group_ids):
        groups.setdefault(group, []).append(index)
    advantages = [0.0] * len(rewards)
    zero_variance = [False] * len(rewards)
    for members in groups.values():
        values = [rewards[i] for i in members]
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        flat = max(values) == min(values)
        for i in members:
            zero_variance[i] = flat
            if mode == "none":
                advantages[i] = rewards[i]
            elif flat:
                advantages[i] = 0.0
            elif mode == "grpo":
                advantages[i] = (rewards[i] - mean) / (std + eps)
            elif mode == "drgrpo":
                advantages[i] = rewards[i] - mean
            else:  # rloo: the mean of the other members is the baseline
                advantages[i] = rewards[i] - (sum(values) - rewards[i]) / (n - 1)
    return torch.tensor(advantages, dtype=torch.float64), torch.tensor(zero_variance)


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
def test_hand_computed_equal_groups(device, backend):
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0], device=device)
    third, std = 1.0 / 3.0, math.sqrt(1.0 / 3.0)  # group 2: mean 1/3, unbiased std sqrt(1/3)
    expected = {
        "grpo": [0, 0, 0, -third / std, 2 * third / std, -third / std],
        "drgrpo": [0, 0, 0, -third, 2 * third, -third],
        "rloo": [0, 0, 0, -0.5, 1.0, -0.5],
        "none": [1, 1, 1, 0, 1, 0],
    }
    for mode, values in expected.items():
        out = group_advantages(rewards, group_size=3, mode=mode, eps=0.0, backend=backend)
        assert out.advantages.dtype == torch.float32 and out.zero_variance.dtype == torch.bool
        torch.testing.assert_close(out.advantages.cpu(), torch.tensor(values, dtype=torch.float32), rtol=1e-6, atol=1e-6)
        assert out.zero_variance.cpu().tolist() == [True, True, True, False, False, False]


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
def test_hand_computed_ragged_non_contiguous(device, backend):
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0], device=device)
    group_ids = torch.tensor([7, 3, 7, 3, -9], device=device)  # any integers, interleaved
    grpo = group_advantages(rewards, group_ids=group_ids, mode="grpo", eps=0.0, backend=backend)
    s2, s8 = math.sqrt(2.0), math.sqrt(8.0)
    torch.testing.assert_close(grpo.advantages.cpu(), torch.tensor([-1 / s2, -2 / s8, 1 / s2, 2 / s8, 0.0]), rtol=1e-6, atol=1e-6)
    assert grpo.zero_variance.cpu().tolist() == [False, False, False, False, True]  # a singleton
    rloo = group_advantages(rewards, group_ids=group_ids, mode="rloo", backend=backend)
    torch.testing.assert_close(rloo.advantages.cpu(), torch.tensor([-2.0, -4.0, 2.0, 4.0, 0.0]))
    none = group_advantages(rewards, group_ids=group_ids, mode="none", backend=backend)
    torch.testing.assert_close(none.advantages.cpu(), rewards.cpu())


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
def test_eps_and_integer_rewards(device, backend):
    rewards = torch.tensor([0, 2], device=device)  # integers are promoted to float32
    out = group_advantages(rewards, group_size=2, eps=1.0, backend=backend)
    std = math.sqrt(2.0)
    torch.testing.assert_close(out.advantages.cpu(), torch.tensor([-1 / (std + 1), 1 / (std + 1)]))


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
def test_bad_input_raises(device, backend):
    rewards = torch.tensor([1.0, float("nan"), 0.0, 1.0], device=device)
    if device == "cpu":  # on CUDA the check is an asynchronous device assertion
        with pytest.raises(ValueError, match="NaN"):
            group_advantages(rewards, group_size=2, backend=backend)
    good = torch.zeros(6, device=device)
    for group_size in (0, 4, -2):
        with pytest.raises(ValueError, match="group_size"):
            group_advantages(good, group_size=group_size, backend=backend)
    with pytest.raises(ValueError, match="exactly one"):
        group_advantages(good, group_size=2, group_ids=torch.zeros(6, dtype=torch.long), backend=backend)
    with pytest.raises(ValueError, match="integer"):
        group_advantages(good, group_ids=torch.zeros(6), backend=backend)
    with pytest.raises(ValueError, match="mode"):
        group_advantages(good, group_size=2, mode="ppo", backend=backend)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_reference_matches_loop(mode, seed):
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 3, (61,), generator=generator).double()  # many ties, some flat groups
    group_ids = torch.randint(0, 17, (61,), generator=generator) * 5 - 40
    out = group_advantages_reference(rewards, dense_group_index(group_ids), mode, 1e-6)
    expected, flat = loop_advantages(rewards.tolist(), group_ids.tolist(), mode)
    torch.testing.assert_close(out.advantages, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.zero_variance, flat)
    assert flat.any() and not flat.all()  # the case exercises both kinds of group


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("group_size", [1, 3, 7, 16, 33])
def test_equal_groups_match_reference(device, backend, mode, group_size):
    for binary in (True, False):
        rewards = make_group_rewards(13, group_size, device=device, seed=group_size, binary=binary)
        out = group_advantages(rewards, group_size=group_size, mode=mode, backend=backend)
        ids = torch.arange(rewards.shape[0], device=device) // group_size
        expected = group_advantages_reference(rewards, ids, mode, 1e-6)
        exact = group_advantages_reference(rewards.double(), ids, mode, 1e-6)
        assert_close_to_reference(out.advantages, exact.advantages, expected.advantages, name=f"{mode} advantages")
        assert torch.equal(out.zero_variance, expected.zero_variance)


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
@pytest.mark.parametrize("mode", MODES)
def test_ragged_matches_loop(device, backend, mode):
    generator = torch.Generator().manual_seed(3)
    rewards = torch.randn(97, generator=generator)
    rewards[:30] = rewards[:30].round()  # ties: some groups flat
    group_ids = torch.randint(0, 23, (97,), generator=generator) * 1000
    out = group_advantages(rewards.to(device), group_ids=group_ids.to(device), mode=mode, backend=backend)
    expected, flat = loop_advantages(rewards.double().tolist(), group_ids.tolist(), mode)
    torch.testing.assert_close(out.advantages.cpu().double(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(out.zero_variance.cpu(), flat)


@pytest.mark.parametrize("device,backend", CASES, ids=IDS)
def test_float64_rewards_flags_exact(device, backend):
    """Rewards equal in float32 but not in float64 are not a zero-variance group."""
    rewards = torch.tensor([1.0, 1.0 + 1e-12, 2.0, 2.0], dtype=torch.float64, device=device)
    for kwargs in ({"group_size": 2}, {"group_ids": torch.tensor([0, 0, 1, 1], device=device)}):
        out = group_advantages(rewards, backend=backend, **kwargs)
        assert out.zero_variance.cpu().tolist() == [False, False, True, True]
        assert out.advantages.abs().max() < 1e-5


@pytest.mark.skipif(not HAS_TRITON, reason="the triton backend is not usable here")
def test_large_groups_fall_back_to_ragged_kernels():
    from r1core.kernels.group_advantages import MAX_FIXED_BLOCK

    group_size = MAX_FIXED_BLOCK + 5
    rewards = make_group_rewards(2, group_size, binary=False)
    out = group_advantages(rewards, group_size=group_size, backend="triton")
    ids = torch.arange(2 * group_size) // group_size
    expected = group_advantages_reference(rewards, ids, "grpo", 1e-6)
    exact = group_advantages_reference(rewards.double(), ids, "grpo", 1e-6)
    assert_close_to_reference(out.advantages, exact.advantages, expected.advantages, name="advantages")


@pytest.mark.skipif(not HAS_TRITON, reason="the triton backend is not usable here")
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    import r1core.ops.group_advantages_triton  # noqa: F401  (registers the ops)

    rewards = make_group_rewards(5, 4, device=device, binary=False)
    ids = dense_group_index(torch.tensor([0, 1, 2, 3] * 5, device=device))
    for mode in ("grpo", "rloo"):
        torch.library.opcheck(torch.ops.r1core.group_advantages_fixed_triton.default, (rewards, 4, mode, 1e-6))
        torch.library.opcheck(torch.ops.r1core.group_advantages_triton.default, (rewards, ids, mode, 1e-6))


def _cuda_launches(fn) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    fn()  # compile outside the count
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", [None, "triton"])
def test_cuda_public_function_is_one_launch_without_host_sync(backend):
    """The public function, NaN check included, is ONE kernel launch for equal groups on CUDA
    (the NaN check is a device assertion inside that kernel) and never synchronises."""
    rewards = make_group_rewards(512, 16, device="cuda")
    launches = _cuda_launches(lambda: group_advantages(rewards, group_size=16, backend=backend))
    assert len(launches) == 1, launches
    torch.cuda.set_sync_debug_mode("error")
    try:
        group_advantages(rewards, group_size=16, backend=backend)
        ids = torch.randint(0, 700, (rewards.shape[0],), device="cuda")
        group_advantages(rewards, group_ids=ids, backend=backend)
    finally:
        torch.cuda.set_sync_debug_mode("default")


NAN_ON_CUDA = """
import torch
from r1core.ops import group_advantages
rewards = torch.ones(64, device="cuda")
rewards[5] = float("nan")
try:
    group_advantages(rewards, {kwargs}, backend="{backend}")
    torch.cuda.synchronize()
except Exception as error:  # the device assertion surfaces at the next synchronisation
    print("raised:", error)
"""


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("kwargs", ["group_size=8", "group_ids=torch.arange(64, device='cuda') % 5"])
def test_cuda_nan_rewards_trip_the_kernel_assertion(backend, kwargs):
    import subprocess
    import sys

    if backend not in available("group_advantages", "cuda"):
        pytest.skip(f"the {backend} backend is not usable here")
    # A device assertion ends the CUDA context: run it in a process of its own.
    run = subprocess.run([sys.executable, "-c", NAN_ON_CUDA.format(kwargs=kwargs, backend=backend)],
                         capture_output=True, text=True, timeout=300)
    assert "raised:" in run.stdout and "assert" in (run.stdout + run.stderr).lower(), run.stdout + run.stderr
