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

from r1core.algos.config import AlgorithmConfig
from r1core.algos.sampling import DynamicSamplingConfig, OverlongConfig
from r1core.config.loader import ConfigError
from r1core.data.config import DataConfig
from r1core.eval.config import EvalConfig
from r1core.models.policy_config import PolicyConfig
from r1core.parallel.layout import LayoutError, ParallelConfig, check_divisible
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
