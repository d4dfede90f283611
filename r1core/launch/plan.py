"""The process-group plan: which global ranks form each TP, CP, DP, PP and expert group.

Ranks are laid out on a grid whose axes are the parallel dimensions in the layout's
``order`` (first name varying fastest): with order ``tp-cp-ep-dp-pp`` and sizes
``[t, c, e, d, p]``, rank ``r`` has coordinates ``r = tp + t*(cp + c*(ep + e*(dp + d*pp)))``.
A group of kind ``"tp-dp"`` is a set of ranks that agree on every coordinate except tp and
dp. Groups are enumerated with the non-member coordinates in grid order (first varying
fastest) and, inside each group, the member coordinates in grid order: the same lists
Megatron-Core's ``RankGenerator.get_ranks`` returns, which the tests check.

Megatron-Core builds two grids over the same ranks: the dense one (``ep`` = 1) and the
expert one (``tp`` = expert_tensor, ``cp`` = 1, ``dp`` = expert_data). Node boundaries
follow consecutive ranks (``rank // gpus_per_node``), as torchrun and SLURM assign them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from r1core.parallel.layout import ParallelLayout

# (plan name, grid, Megatron-Core kind, what the group is for)
GROUP_KINDS: tuple[tuple[str, str, str, str], ...] = (
    ("tp", "dense", "tp", "tensor parallel"),
    ("cp", "dense", "cp", "context parallel"),
    ("dp", "dense", "dp", "data parallel (gradient all-reduce without CP)"),
    ("dp_cp", "dense", "dp-cp", "data x context parallel (gradient reduce, optimizer shards)"),
    ("pp", "dense", "pp", "pipeline parallel"),
    ("mp", "dense", "tp-pp", "model parallel (one model replica)"),
    ("tp_cp", "dense", "tp-cp", "tensor x context parallel"),
    ("tp_dp", "dense", "tp-dp", "tensor x data parallel"),
    ("tp_dp_cp", "dense", "tp-dp-cp", "tensor x data x context parallel"),
    ("ep", "expert", "ep", "expert parallel (token all-to-all)"),
    ("etp", "expert", "tp", "expert tensor parallel"),
    ("tp_ep", "expert", "tp-ep", "expert tensor x expert parallel"),
    ("tp_ep_pp", "expert", "tp-ep-pp", "expert tensor x expert x pipeline parallel"),
    ("edp", "expert", "dp", "expert data parallel (expert gradient reduce)"),
)


def grid_sizes(layout: ParallelLayout, grid: str) -> dict[str, int]:
    """Sizes of the five dimensions in the dense or the expert grid."""
    if grid == "dense":
        return {"tp": layout.tensor, "cp": layout.context, "ep": 1, "dp": layout.data, "pp": layout.pipeline}
    if grid == "expert":
        return {
            "tp": layout.expert_tensor,
            "cp": 1,
            "ep": layout.expert,
            "dp": layout.expert_data,
            "pp": layout.pipeline,
        }
    raise ValueError(f"unknown grid {grid!r}; valid: 'dense', 'expert'")


def rank_groups(order: str, sizes: dict[str, int], kind: str) -> list[list[int]]:
    """Groups of global ranks for ``kind`` (e.g. ``"tp"`` or ``"tp-dp"``) on one grid.

    Args:
        order: dimension names, fastest first, e.g. ``"tp-cp-ep-dp-pp"``.
        sizes: size of every dimension named in ``order``.
        kind: the dimensions that vary inside a group, joined by ``-``.
    """
    names = order.split("-")
    members = kind.split("-")
    unknown = [name for name in members if name not in names]
    if unknown:
        raise ValueError(f"group kind {kind!r} names {unknown}, not in order {order!r}")
    strides = [math.prod(sizes[name] for name in names[:index]) for index in range(len(names))]
    inside = [index for index, name in enumerate(names) if name in members]
    outside = [index for index, name in enumerate(names) if name not in members]

    def fastest_first(indices: list[int]):
        # itertools.product varies its last factor fastest; reverse to make the first fastest.
        for combo in itertools.product(*(range(sizes[names[i]]) for i in reversed(indices))):
            yield sum(coordinate * strides[i] for coordinate, i in zip(combo, reversed(indices)))

    return [[base + offset for offset in fastest_first(inside)] for base in fastest_first(outside)]


@dataclass
class GroupPlan:
    """All groups of one kind."""

    name: str
    description: str
    groups: list[list[int]]

    @property
    def group_size(self) -> int:
        return len(self.groups[0]) if self.groups else 0

    def nodes_spanned(self, gpus_per_node: int) -> int:
        """Most nodes any one group touches (1: all its traffic stays inside a node)."""
        return max(len({rank // gpus_per_node for rank in group}) for group in self.groups)


@dataclass
class ProcessGroupPlan:
    """Every process group a layout creates, plus helpers to print and query it."""

    layout: ParallelLayout
    gpus_per_node: int
    kinds: dict[str, GroupPlan] = field(default_factory=dict)

    def groups(self, name: str) -> list[list[int]]:
        return self.kinds[name].groups

    def coordinates(self, rank: int) -> dict[str, int]:
        """Position of ``rank`` in each group kind it belongs to (its rank in that group)."""
        found = {}
        for name, plan in self.kinds.items():
            for group in plan.groups:
                if rank in group:
                    found[name] = group.index(rank)
                    break
        return found

    def format(self, max_groups: int = 4, max_ranks: int = 16) -> str:
        """Readable table; long lists are cut to ``max_groups`` groups of ``max_ranks`` ranks."""
        lines = [f"process groups ({self.layout.describe()}):"]
        shown_before: list[list[list[int]]] = []
        for name, plan in self.kinds.items():
            # A kind identical to one already printed (dp_cp when CP = 1, the expert kinds of
            # a dense layout) or of single ranks adds nothing to read.
            if name not in ("tp", "dp", "pp") and (plan.group_size <= 1 or plan.groups in shown_before):
                continue
            shown_before.append(plan.groups)
            spanned = plan.nodes_spanned(self.gpus_per_node)
            where = "within a node" if spanned == 1 else f"spans {spanned} nodes"
            shown = [_format_ranks(group, max_ranks) for group in plan.groups[:max_groups]]
            if len(plan.groups) > max_groups:
                shown.append(f"... ({len(plan.groups) - max_groups} more)")
            lines.append(
                f"  {name:<9} {len(plan.groups):>5} x {plan.group_size:<5} {where:<15} "
                f"{plan.description}"
            )
            lines.append("            " + " ".join(shown))
        return "\n".join(lines)


def _format_ranks(group: list[int], max_ranks: int) -> str:
    if len(group) <= max_ranks:
        return "[" + ",".join(map(str, group)) + "]"
    head = ",".join(map(str, group[: max_ranks - 2]))
    return f"[{head},...,{group[-1]}]({len(group)})"


def build_plan(layout: ParallelLayout, gpus_per_node: int) -> ProcessGroupPlan:
    """The process groups Megatron-Core's ``initialize_model_parallel`` creates for ``layout``."""
    if gpus_per_node < 1:
        raise ValueError(f"gpus_per_node must be positive, got {gpus_per_node}")
    plan = ProcessGroupPlan(layout=layout, gpus_per_node=gpus_per_node)
    for name, grid, kind, description in GROUP_KINDS:
        groups = rank_groups(layout.order, grid_sizes(layout, grid), kind)
        plan.kinds[name] = GroupPlan(name=name, description=description, groups=groups)
    # Embedding group: first and last stage of each pipeline (tied input/output embeddings).
    embedding = [sorted({group[0], group[-1]}) for group in plan.kinds["pp"].groups]
    plan.kinds["embedding"] = GroupPlan("embedding", "first and last pipeline stage", embedding)
    return plan


def layout_warnings(plan: ProcessGroupPlan) -> list[str]:
    """Placements that work but are usually slow (e.g. TP across the node interconnect)."""
    warnings = []
    per_node = plan.gpus_per_node
    world = plan.layout.world_size
    if world % per_node:
        warnings.append(f"world size {world} is not a multiple of {per_node} GPUs per node")
    for name in ("tp", "etp", "cp"):
        spanned = plan.kinds[name].nodes_spanned(per_node)
        if spanned > 1:
            warnings.append(
                f"{name} groups span {spanned} nodes: their per-layer collectives cross the "
                "inter-node network; keep them inside a node if you can"
            )
    return warnings
