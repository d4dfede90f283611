"""Parallel layouts: the configured sizes, their validation, and the resolved layout.

This module is the one place that decides whether a layout can run: ``r1core launch plan``
calls it before a job is queued, the trainer before any process group exists, and
``build_policy`` before a weight is read. Every check raises :class:`LayoutError`, which
lists every broken rule, not only the first.

The rules are Megatron-Core's (``megatron/core/parallel_state.py``,
``initialize_model_parallel``), applied before any process starts:

* Dense (attention) part: ``world = tensor x context x data x pipeline``; the data-parallel
  size is what is left of the world once TP, CP and PP are taken.
* Expert (MoE) part: its own grid over the same ranks,
  ``world = expert_tensor x expert x expert_data x pipeline``. Expert parallelism is not an
  extra factor of the world: it folds into the ``tensor x context x data`` ranks of one
  pipeline stage, so ``expert x expert_tensor`` must divide ``tensor x context x data``.
  ``expert_tensor`` defaults to ``tensor``.
* Rank order: a permutation of ``tp, cp, ep, dp, pp`` (default ``tp-cp-ep-dp-pp``, the
  first name varying fastest). When ``pp`` is not last and PP > 1, the expert data-parallel
  size must equal the dense one.

Model-shape rules (attention heads vs TP, layers vs PP, experts vs EP...) live in
:func:`check_model_fits` because they need the model's sizes (:class:`ModelDimensions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

PARALLEL_NAMES = ("tp", "cp", "ep", "dp", "pp")
DEFAULT_ORDER = "tp-cp-ep-dp-pp"
# Megatron-LM pads the vocabulary to a multiple of this times TP so every TP shard of the
# embedding and output layer has the same, GEMM-friendly width.
VOCAB_DIVISIBLE_BY = 128


class ModelDimensions(Protocol):
    """The sizes of a model that the layout rules read (``r1core.models.shape.ModelShape`` has
    them all)."""

    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    ffn_hidden_size: int
    vocab_size: int
    num_experts: int
    moe_top_k: int
    moe_ffn_hidden_size: int
    num_dense_layers: int


class LayoutError(ValueError):
    """An impossible layout; ``problems`` lists every rule broken, one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("impossible parallel layout:\n  - " + "\n  - ".join(self.problems))


@dataclass
class ParallelConfig:
    """How the trainer's ranks are split. Sizes are counts of GPUs (ranks)."""

    tensor: int = 1
    """Tensor-parallel size: each weight matrix is split across this many ranks."""
    pipeline: int = 1
    """Pipeline-parallel size: the layers are split into this many stages."""
    virtual_pipeline: Optional[int] = None
    """Interleaved-schedule model chunks per pipeline rank (None: not interleaved)."""
    context: int = 1
    """Context-parallel size: each sequence is split across this many ranks."""
    expert: int = 1
    """Expert-parallel size: the MoE experts are spread across this many ranks."""
    expert_tensor: Optional[int] = None
    """Tensor-parallel size inside each expert (None: same as ``tensor``)."""
    data: int = 0
    """Data-parallel size; 0 derives it from the world size (the usual choice)."""
    sequence_parallel: bool = False
    """Shard layer-norm/dropout activations along the sequence across the TP ranks."""
    distributed_optimizer: bool = True
    """Shard fp32 main parameters and Adam states across data-parallel ranks (ZeRO-1)."""
    order: str = DEFAULT_ORDER
    """Rank order, fastest-varying first (Megatron-Core's ``order`` argument)."""
    backend: Optional[str] = None
    """torch.distributed backend when r1core creates the default process group itself
    (None: ``nccl`` with CUDA, ``gloo`` otherwise)."""

    def __post_init__(self) -> None:
        # The sizes are checked together, against the world size, by resolve_layout (which
        # lists every broken rule); a run calls it before anything is built.
        if self.backend not in (None, "nccl", "gloo"):
            raise ValueError(f"parallel.backend must be nccl, gloo or null, got {self.backend!r}")

    @property
    def expert_tensor_size(self) -> int:
        """Tensor-parallel size inside each expert (``expert_tensor``, else ``tensor``)."""
        return self.tensor if self.expert_tensor is None else self.expert_tensor


@dataclass(frozen=True)
class ParallelLayout:
    """A validated layout for a given world size; every size here is final."""

    world_size: int
    tensor: int
    pipeline: int
    context: int
    data: int
    expert: int
    expert_tensor: int
    expert_data: int
    virtual_pipeline: Optional[int]
    sequence_parallel: bool
    distributed_optimizer: bool
    order: str

    def describe(self) -> str:
        """One line such as ``64 GPUs = TP 4 x CP 1 x DP 8 x PP 2; experts: ETP 4 x EP 8 ...``."""
        text = (
            f"{self.world_size} GPUs = TP {self.tensor} x CP {self.context} x DP {self.data}"
            f" x PP {self.pipeline}"
        )
        if self.expert > 1 or self.expert_tensor != self.tensor:
            text += (
                f"; experts: ETP {self.expert_tensor} x EP {self.expert} x EDP "
                f"{self.expert_data} x PP {self.pipeline}"
            )
        if self.virtual_pipeline:
            text += f"; VPP {self.virtual_pipeline}"
        if self.sequence_parallel:
            text += "; sequence parallel"
        return text + f"; order {self.order}"


def _check_order(order: str, sizes: dict[str, int]) -> tuple[str, list[str]]:
    problems = []
    tokens = [token.strip() for token in order.lower().split("-") if token.strip()]
    unknown = [token for token in tokens if token not in PARALLEL_NAMES]
    if unknown:
        problems.append(
            f"order {order!r} has unknown names {unknown}; use names from {list(PARALLEL_NAMES)}"
        )
    duplicated = sorted({token for token in tokens if tokens.count(token) > 1})
    if duplicated:
        problems.append(f"order {order!r} repeats {duplicated}")
    for name in PARALLEL_NAMES:
        if name not in tokens:
            if sizes.get(name, 1) != 1:
                problems.append(f"order {order!r} omits {name!r}, whose size is {sizes[name]}")
            else:
                tokens.append(name)  # Megatron appends size-1 dimensions left out of the order
    return "-".join(tokens), problems


def resolve_layout(config: ParallelConfig, world_size: int) -> ParallelLayout:
    """Check ``config`` against ``world_size`` and derive the data-parallel sizes.

    Raises:
        LayoutError: listing every broken rule (not just the first), each naming the sizes.
    """
    problems: list[str] = []
    named = {
        "world size": world_size,
        "tensor": config.tensor,
        "pipeline": config.pipeline,
        "context": config.context,
        "expert": config.expert,
    }
    if config.expert_tensor is not None:
        named["expert_tensor"] = config.expert_tensor
    if config.virtual_pipeline is not None:
        named["virtual_pipeline"] = config.virtual_pipeline
    for name, value in named.items():
        if not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be a positive integer, got {value!r}")
    if config.data < 0:
        problems.append(f"data must be 0 (derive) or a positive integer, got {config.data}")
    if problems:
        raise LayoutError(problems)

    expert_tensor = config.expert_tensor if config.expert_tensor is not None else config.tensor
    model_size = config.tensor * config.pipeline * config.context
    data = world_size // model_size
    if world_size % model_size:
        problems.append(
            f"world size {world_size} is not divisible by tensor x pipeline x context = "
            f"{config.tensor} x {config.pipeline} x {config.context} = {model_size}"
        )
    elif config.data and config.data != data:
        problems.append(
            f"data={config.data} does not fit: world size {world_size} / (tensor x pipeline x "
            f"context = {model_size}) gives data-parallel size {data}"
        )
    expert_model_size = expert_tensor * config.expert * config.pipeline
    expert_data = world_size // expert_model_size
    if world_size % expert_model_size and not world_size % model_size:
        dense_width = config.tensor * config.context * max(data, 1)
        problems.append(
            f"expert parallelism does not fit: expert x expert_tensor = {config.expert} x "
            f"{expert_tensor} = {config.expert * expert_tensor} must divide the ranks of one "
            f"pipeline stage (tensor x context x data = {dense_width}); in Megatron-Core expert "
            f"parallelism folds into the data-parallel (x context) dimension"
        )
    sizes = {"tp": config.tensor, "cp": config.context, "ep": config.expert, "pp": config.pipeline}
    sizes["dp"] = max(data, 1)
    order, order_problems = _check_order(config.order, sizes)
    problems.extend(order_problems)
    if (
        not order_problems
        and not order.endswith("pp")
        and config.pipeline > 1
        and not problems
        and expert_data != data
    ):
        problems.append(
            f"order {order!r} does not put pp last, so the expert data-parallel size "
            f"({expert_data}) must equal the dense one ({data})"
        )
    if config.sequence_parallel and config.tensor == 1:
        problems.append("sequence_parallel needs tensor > 1 (it shards along the TP ranks)")
    if config.virtual_pipeline is not None and config.pipeline == 1:
        problems.append("virtual_pipeline needs pipeline > 1 (it interleaves pipeline stages)")
    if problems:
        raise LayoutError(problems)
    return ParallelLayout(
        world_size=world_size,
        tensor=config.tensor,
        pipeline=config.pipeline,
        context=config.context,
        data=data,
        expert=config.expert,
        expert_tensor=expert_tensor,
        expert_data=expert_data,
        virtual_pipeline=config.virtual_pipeline,
        sequence_parallel=config.sequence_parallel,
        distributed_optimizer=config.distributed_optimizer,
        order=order,
    )


def padded_vocab_size(vocab_size: int, tensor: int) -> int:
    """Vocabulary padded to a multiple of ``128 x tensor`` (Megatron-LM's rule)."""
    multiple = VOCAB_DIVISIBLE_BY * tensor
    return -(-vocab_size // multiple) * multiple


def check_model_fits(
    layout: ParallelLayout, model: ModelDimensions, sequence_length: int | None = None
) -> list[str]:
    """Model-shape rules of Megatron-Core for this layout.

    Returns:
        Human-readable notes (e.g. vocabulary padding); empty when nothing to say.

    Raises:
        LayoutError: heads not divisible by TP, KV heads neither a multiple nor a divisor of
            TP, layers not divisible by PP (x VPP), experts not divisible by EP, MoE with
            TP > 1 but no sequence parallelism, sequence length not divisible as CP/SP need.
    """
    problems: list[str] = []
    notes: list[str] = []
    tp, pp = layout.tensor, layout.pipeline
    if model.num_attention_heads % tp:
        problems.append(
            f"num_attention_heads={model.num_attention_heads} is not divisible by tensor={tp}"
        )
    kv = model.num_kv_heads
    if kv % tp and tp % kv:
        problems.append(
            f"num_kv_heads={kv} must be a multiple or a divisor of tensor={tp}"
        )
    elif kv < tp:
        notes.append(f"{kv} KV heads < TP {tp}: each KV head is replicated on {tp // kv} ranks")
    dense_mlp = not model.num_experts or model.num_dense_layers > 0
    if dense_mlp and model.ffn_hidden_size % tp:
        problems.append(f"ffn_hidden_size={model.ffn_hidden_size} (intermediate_size) is not divisible by tensor={tp}")
    stages = pp * (layout.virtual_pipeline or 1)
    if model.num_layers % stages:
        what = (
            f"pipeline x virtual_pipeline = {pp} x {layout.virtual_pipeline}"
            if layout.virtual_pipeline
            else f"pipeline={pp}"
        )
        problems.append(f"num_layers={model.num_layers} is not divisible by {what}")
    if model.num_experts:
        if model.num_experts % layout.expert:
            problems.append(
                f"num_experts={model.num_experts} is not divisible by expert={layout.expert}"
            )
        if model.moe_ffn_hidden_size % layout.expert_tensor:
            problems.append(
                f"moe_ffn_hidden_size={model.moe_ffn_hidden_size} (moe_intermediate_size) is not "
                f"divisible by expert_tensor={layout.expert_tensor}"
            )
        if tp > 1 and not layout.sequence_parallel:
            problems.append(
                "a MoE model with tensor > 1 needs sequence_parallel=true (Megatron-Core's "
                "MoE layer refuses to train with TP > 1 without it)"
            )
    elif layout.expert > 1:
        problems.append(f"expert={layout.expert} but the model has no experts")
    if model.moe_top_k > max(model.num_experts, 0) and model.num_experts:
        problems.append(
            f"moe_top_k={model.moe_top_k} exceeds num_experts={model.num_experts}"
        )
    if sequence_length is not None:
        if layout.context > 1 and sequence_length % (2 * layout.context):
            problems.append(
                f"sequence length {sequence_length} is not divisible by 2 x context = "
                f"{2 * layout.context} (context parallelism splits each sequence into 2 x CP "
                "chunks for load balance)"
            )
        if layout.sequence_parallel and sequence_length % (tp * layout.context):
            problems.append(
                f"sequence length {sequence_length} is not divisible by tensor x context = "
                f"{tp * layout.context}, which sequence parallelism needs"
            )
    if problems:
        raise LayoutError(problems)
    padded = padded_vocab_size(model.vocab_size, tp)
    if padded != model.vocab_size:
        notes.append(
            f"vocabulary padded from {model.vocab_size} to {padded} "
            f"(multiple of {VOCAB_DIVISIBLE_BY} x TP {tp})"
        )
    return notes


def check_divisible(total: int, parts: int, what: str) -> int:
    """``total / parts``, or :class:`LayoutError` naming ``what`` and both numbers (a batch
    split over data-parallel replicas: every replica trains on the same number of rows)."""
    if parts < 1:
        raise LayoutError([f"data-parallel size must be >= 1, got {parts}"])
    if total % parts:
        raise LayoutError([
            f"{what}={total} is not divisible by the data-parallel size {parts}: every replica "
            f"must train on the same number of whole groups; choose a multiple of {parts}"
        ])
    return total // parts
