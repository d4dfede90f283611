"""The top-level run configuration: one section per component, each owned by its component.

``RunConfig`` only composes. Each section's dataclass lives beside the code that reads it
(``ParallelConfig`` in ``r1core/parallel/layout.py``, ``CheckpointConfig`` in
``r1core/trainer/checkpoint.py``, ``AlgorithmConfig`` in ``r1core/algos/config.py``, ...), and
functions receive only the sections they use; only the commands' entry points see the whole
``RunConfig``.

With no file and no overrides every section keeps its defaults, which together are the
embedded default run (a small model built on the spot, cold-start SFT, then GRPO, on CPU).
A YAML file for a run looks like::

    run: {name: qwen-math-grpo, seed: 1}
    parallel: {tensor: 2, pipeline: 1}
    checkpoint: {interval: 50, keep_last: 2}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from r1core.algos.config import AlgorithmConfig
from r1core.algos.sampling import DynamicSamplingConfig, OverlongConfig
from r1core.config.loader import ConfigError
from r1core.data.config import DataConfig
from r1core.eval.config import EvalConfig
from r1core.models.policy_config import PolicyConfig
from r1core.models.hf_config import from_hf_config, parse_hf_config
from r1core.models.shape import ModelShape
from r1core.parallel.layout import LayoutError, ParallelConfig, check_divisible, check_model_fits, resolve_layout
from r1core.rewards.config import RewardConfig
from r1core.rollout.config import RolloutConfig
from r1core.trainer.checkpoint import CheckpointConfig
from r1core.trainer.embedded import EmbeddedConfig
from r1core.trainer.grpo import GRPOConfig
from r1core.trainer.run_logger import LoggingConfig
from r1core.trainer.sft import SFTConfig


@dataclass
class RunSection:
    """Identity and location of a run."""

    name: str = "r1core"
    """Run name; the run directory is ``output_root/name``."""
    output_root: str = "runs"
    """Parent folder of run directories (config.yaml, checkpoints, logs land inside)."""
    seed: int = 1234
    """Seed of every RNG at start-up (a resumed run restores the saved states instead)."""

    def __post_init__(self) -> None:
        if not self.name or self.name in (".", "..") or "/" in self.name or os.sep in self.name:
            raise ValueError(f"run.name must be a plain folder name (no '/'), got {self.name!r}")
        if not self.output_root:
            raise ValueError("run.output_root is empty")
        if self.seed < 0:
            raise ValueError(f"run.seed must be >= 0, got {self.seed}")

    @property
    def directory(self) -> str:
        return os.path.join(self.output_root, self.name)


# The embedded default run trains with DAPO's loss (clip-higher, token-level mean) and
# leaves DAPO's sampling strategies off, as in the run the README reports: with 48-token
# answers and a 0.8M-parameter model, dynamic sampling's refill rounds would cost more
# generation than the step itself. `algorithm.dynamic_sampling.enabled=true` and
# `algorithm.overlong.buffer_fraction=0.2` turn them on; AlgorithmConfig.from_preset("dapo") has both.
EMBEDDED_ALGORITHM = AlgorithmConfig.from_preset("dapo", dynamic_sampling=DynamicSamplingConfig(enabled=False),
                                            overlong=OverlongConfig(buffer_fraction=0.0))


@dataclass
class RunConfig:
    """Everything one ``r1core train|sft|eval`` run is configured by."""

    run: RunSection = field(default_factory=RunSection)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(max_model_len=256))
    algorithm: AlgorithmConfig = field(default_factory=lambda: EMBEDDED_ALGORITHM)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: GRPOConfig = field(default_factory=GRPOConfig)
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)

    def __post_init__(self) -> None:
        """Checks across sections, on values alone (each section checked its own already)."""
        trainer, rollout = self.trainer, self.rollout
        # rollout.max_model_len is raised to what the prompts and these budgets need at the
        # start of a run (r1core.commands.prompting.length_plan), capped by the model's
        # positions; the embedded model's are known here already.
        positions = self.embedded.model.max_position_embeddings
        for key, budget in (("trainer.max_response_tokens", trainer.max_response_tokens),
                            ("eval.max_tokens", self.eval.max_tokens)):
            if not self.policy.hf_dir and budget >= positions:
                raise ValueError(f"{key}={budget} leaves no room for the prompt within the embedded model's "
                                 f"embedded.model.max_position_embeddings={positions}")
        self.algorithm.budget_schedule(trainer.max_response_tokens)
        if not self.policy.hf_dir and positions < rollout.max_model_len:
            raise ValueError(f"rollout.max_model_len={rollout.max_model_len} exceeds the embedded model's "
                             f"embedded.model.max_position_embeddings={self.embedded.model.max_position_embeddings}")

    def check_world(self, world_size: int) -> None:
        """What the configuration asks of ``world_size`` ranks, checked before anything is
        built: the layout (``parallel.*``), the model's shape under it (heads, KV heads, FFN
        width and layers against TP and PP: the configured checkpoint's ``config.json`` or the
        embedded model's settings) and the batch split over the data-parallel replicas.

        Raises:
            LayoutError: the layout or the model does not fit (every broken rule listed).
            ConfigError: a batch size is not divisible by the data-parallel size.
        """
        layout = resolve_layout(self.parallel, world_size)
        check_model_fits(layout, self.model_shape())
        self.check_batch_split(layout.data)

    def model_shape(self) -> ModelShape:
        """The trained model's shape: read from ``policy.hf_dir``, or the embedded model's
        (its vocabulary taken as ``embedded.vocab_size``; the tokenizer may end a few entries
        off, which the layout rules do not look at)."""
        if self.policy.hf_dir:
            return from_hf_config(self.policy.hf_dir)
        model = self.embedded.model
        return parse_hf_config({
            "model_type": "qwen2", "vocab_size": self.embedded.vocab_size, "hidden_size": model.hidden_size,
            "intermediate_size": model.intermediate_size, "num_hidden_layers": model.num_layers,
            "num_attention_heads": model.num_attention_heads, "num_key_value_heads": model.num_key_value_heads,
            "max_position_embeddings": model.max_position_embeddings,
            "tie_word_embeddings": model.tie_word_embeddings,
        }, name="embedded")

    def check_batch_split(self, dp_size: int) -> None:
        """Raise :class:`~r1core.config.ConfigError` (naming the key) when the batch sizes do not
        split over ``dp_size`` data-parallel replicas: ``trainer.prompts_per_step``, and
        ``sft.batch_size`` when the run has a cold start. Used at start-up and by
        ``r1core launch plan --config``."""
        checks = [("trainer.prompts_per_step", self.trainer.prompts_per_step)]
        if self.sft.epochs > 0:
            checks.append(("sft.batch_size", self.sft.batch_size))
        for key, value in checks:
            try:
                check_divisible(value, dp_size, what=key)
            except LayoutError as error:
                raise ConfigError(error.problems[0], key=key) from None

    @property
    def checkpoint_directory(self) -> str:
        """``checkpoint.directory``, or ``<run dir>/checkpoints`` when left empty."""
        return self.checkpoint.directory or os.path.join(self.run.directory, "checkpoints")


# Keys a resumed run may change: where the run lives, how long it runs, how it checkpoints,
# reports and evaluates, and the engine's and reward pool's resources. Any other key changes
# the model, the data or the algorithm, and a resumed run refuses it (see
# ``changed_for_resume``). A trailing dot covers a whole section.
RESUMABLE_KEYS = (
    "run.output_root", "run.name", "trainer.steps", "checkpoint.", "logging.", "eval.every",
    "reward.num_workers", "reward.sample_timeout_s", "rollout.kv_cache_memory_bytes",
    "rollout.gpu_memory_utilization", "rollout.enable_sleep_mode", "rollout.bucket_bytes",
    "rollout.weight_transfer_backend",
)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def changed_for_resume(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose value differs between a checkpoint's configuration ``saved`` and this run's
    ``current`` (plain nested dicts) and that a resumed run may not change, each as
    ``key (saved -> current)``; keys present on one side only count as changed."""
    before, after = _flatten(saved), _flatten(current)
    changed = []
    for key in sorted(set(before) | set(after)):
        if before.get(key, "<absent>") == after.get(key, "<absent>"):
            continue
        if any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in RESUMABLE_KEYS):
            continue
        changed.append(f"{key} ({before.get(key, '<absent>')!r} -> {after.get(key, '<absent>')!r})")
    return changed
