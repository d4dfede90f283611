"""The process-group plan equals what Megatron-Core builds, and refuses what it refuses.

Two independent references: Megatron-Core's ``RankGenerator`` (every group of every kind),
and Megatron-Core's real ``initialize_model_parallel`` run on torch's fake process-group
backend for sampled ranks (the groups each rank actually joins), with no GPU and no peers.
"""

from __future__ import annotations

import itertools
import warnings

import pytest

from r1core.parallel.layout import LayoutError, ParallelConfig, resolve_layout
from r1core.launch.plan import GROUP_KINDS, build_plan, grid_sizes, layout_warnings, rank_groups

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from megatron.core import parallel_state
    from megatron.core.parallel_state import RankGenerator

import torch.distributed as dist
from torch.testing._internal.distributed.fake_pg import FakeStore

LAYOUTS = [
    # (world, tp, pp, cp, ep, etp, order)
    (8, 1, 1, 1, 1, None, "tp-cp-ep-dp-pp"),
    (16, 2, 2, 1, 1, None, "tp-cp-ep-dp-pp"),
    (32, 2, 2, 2, 4, None, "tp-cp-ep-dp-pp"),
    (64, 4, 2, 1, 8, None, "tp-cp-ep-dp-pp"),
    (64, 4, 2, 1, 8, 1, "tp-cp-ep-dp-pp"),
    (64, 8, 4, 1, 1, None, "tp-cp-ep-dp-pp"),
    (48, 2, 3, 2, 2, 2, "tp-cp-ep-dp-pp"),
    (24, 2, 2, 1, 3, 2, "tp-cp-ep-dp-pp"),
    (16, 2, 2, 1, 2, 1, "tp-cp-ep-pp-dp"),
    (32, 4, 2, 1, 1, None, "tp-pp-dp"),
    (16, 2, 4, 1, 2, None, "tp-cp-ep-dp-pp"),
]


def _layout(world, tp, pp, cp, ep, etp, order):
    config = ParallelConfig(tensor=tp, pipeline=pp, context=cp, expert=ep, expert_tensor=etp, order=order)
    return resolve_layout(config, world)


@pytest.mark.parametrize("case", LAYOUTS, ids=lambda c: "w{}-tp{}-pp{}-cp{}-ep{}-etp{}-{}".format(*c))
def test_every_group_matches_megatron_rank_generator(case):
    layout = _layout(*case)
    plan = build_plan(layout, gpus_per_node=8)
    generators = {
        grid: RankGenerator(
            tp=sizes["tp"], ep=sizes["ep"], dp=sizes["dp"], pp=sizes["pp"], cp=sizes["cp"], order=case[-1]
        )
        for grid, sizes in ((g, grid_sizes(layout, g)) for g in ("dense", "expert"))
    }
    for name, grid, kind, _ in GROUP_KINDS:
        assert plan.groups(name) == generators[grid].get_ranks(kind), (name, kind)
        flattened = sorted(itertools.chain.from_iterable(plan.groups(name)))
        assert flattened == list(range(layout.world_size)), f"{name} groups do not partition the ranks"


_MEGATRON_GROUPS = {
    "tp": lambda: parallel_state._TENSOR_MODEL_PARALLEL_GLOBAL_RANKS,
    "pp": lambda: parallel_state._PIPELINE_GLOBAL_RANKS,
    "dp": lambda: parallel_state._DATA_PARALLEL_GLOBAL_RANKS,
    "dp_cp": lambda: parallel_state._DATA_PARALLEL_GLOBAL_RANKS_WITH_CP,
    "cp": lambda: parallel_state._CONTEXT_PARALLEL_GLOBAL_RANKS,
    "mp": lambda: parallel_state._MODEL_PARALLEL_GLOBAL_RANKS,
    "ep": lambda: parallel_state._EXPERT_MODEL_PARALLEL_RANKS,
    "etp": lambda: dist.get_process_group_ranks(parallel_state.get_expert_tensor_parallel_group()),
    "edp": lambda: dist.get_process_group_ranks(parallel_state.get_expert_data_parallel_group()),
    "tp_ep": lambda: dist.get_process_group_ranks(
        parallel_state.get_expert_tensor_and_model_parallel_group()
    ),
    "embedding": lambda: parallel_state._EMBEDDING_GLOBAL_RANKS,
}


def _megatron_initialize(world, rank, tp, pp, cp, ep, etp, order):
    dist.init_process_group("fake", rank=rank, world_size=world, store=FakeStore())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parallel_state.initialize_model_parallel(
                tensor_model_parallel_size=tp,
                pipeline_model_parallel_size=pp,
                context_parallel_size=cp,
                expert_model_parallel_size=ep,
                expert_tensor_parallel_size=etp,
                order=order,
                create_gloo_process_groups=False,
            )
        return {name: list(get() or []) for name, get in _MEGATRON_GROUPS.items()}
    finally:
        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()


@pytest.mark.parametrize("case", LAYOUTS[1:8], ids=lambda c: "w{}-tp{}-pp{}-cp{}-ep{}-etp{}-{}".format(*c))
def test_groups_match_megatron_initialize_model_parallel(case):
    layout = _layout(*case)
    plan = build_plan(layout, gpus_per_node=8)
    world = case[0]
    for rank in sorted({0, 1, world // 2 + 1, world - 1}):
        joined = _megatron_initialize(world, rank, *case[1:])
        for name, ranks in joined.items():
            ours = next((group for group in plan.groups(name) if rank in group), None)
            if ours is None:  # a middle pipeline stage joins no embedding group
                assert name == "embedding" and rank not in ranks, (rank, name, ranks)
            else:
                assert ours == ranks, (rank, name)


CANDIDATES = [
    (world, tp, pp, cp, ep, order)
    for order in ("tp-cp-ep-dp-pp", "tp-cp-ep-pp-dp")
    for world in (8, 12, 16, 24)
    for tp in (1, 2, 3, 4)
    for pp in (1, 2, 3)
    for cp in (1, 2)
    for ep in (1, 2, 4, 8)
]


def test_accepts_exactly_what_megatron_accepts():
    """Over a grid of sizes, resolve_layout refuses a layout iff Megatron-Core does."""
    disagreements = []
    checked_valid = 0
    for world, tp, pp, cp, ep, order in CANDIDATES:
        try:
            resolve_layout(ParallelConfig(tensor=tp, pipeline=pp, context=cp, expert=ep, order=order), world)
            ours = True
        except LayoutError:
            ours = False
        try:
            _megatron_initialize(world, 0, tp, pp, cp, ep, None, order)
            theirs = True
        except (RuntimeError, AssertionError):
            theirs = False
        checked_valid += theirs
        if ours != theirs:
            disagreements.append(((world, tp, pp, cp, ep, order), ours, theirs))
    assert not disagreements
    assert 50 <= checked_valid <= len(CANDIDATES) - 50  # the grid exercised both outcomes


def test_rank_groups_small_example_by_hand():
    # 8 ranks, tp=2, pp=2, dp=2 in order tp-dp-pp: rank = tp + 2*dp + 4*pp.
    sizes = {"tp": 2, "dp": 2, "pp": 2}
    assert rank_groups("tp-dp-pp", sizes, "tp") == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert rank_groups("tp-dp-pp", sizes, "dp") == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert rank_groups("tp-dp-pp", sizes, "pp") == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert rank_groups("tp-dp-pp", sizes, "tp-pp") == [[0, 1, 4, 5], [2, 3, 6, 7]]


def test_plan_format_truncates_and_warns_about_cross_node_tp():
    layout = resolve_layout(ParallelConfig(tensor=16, pipeline=1), 256)
    plan = build_plan(layout, gpus_per_node=8)
    text = plan.format(max_groups=2, max_ranks=6)
    assert "tp" in text and "(14 more)" in text and ",...,15](16)" in text
    assert len(text.splitlines()) < 40
    assert any("tp groups span 2 nodes" in warning for warning in layout_warnings(plan))
    assert plan.coordinates(17)["tp"] == 1
