"""The top-level run configuration: one section per component, each owned by its component.

``RunConfig`` only composes. Each section's dataclass lives beside the code that reads it
(``ParallelConfig`` in ``r1core/launch/layout.py``, ``CheckpointConfig`` in
``r1core/trainer/checkpoint.py``, ``AlgorithmConfig`` in ``r1core/algos/config.py``), and
functions receive only the sections they use.

The sections of components that are not assembled yet (policy, rollout, rewards, data,
sft, eval) are typed slots holding an empty dataclass: any key given for them
fails with "this section has no keys yet" until the component's own dataclass replaces the
slot's type here. A YAML file for a run looks like::

    run: {name: qwen-math-grpo, seed: 1}
    parallel: {tensor: 2, pipeline: 1}
    checkpoint: {interval: 50, keep_last: 2}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from r1core.algos.config import AlgorithmConfig
from r1core.launch.layout import ParallelConfig
from r1core.trainer.checkpoint import CheckpointConfig


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


@dataclass
class LoggingConfig:
    """What the trainer reports, and where."""

    interval: int = 1
    """Log metrics every this many steps."""
    tensorboard: bool = True
    """Write TensorBoard event files under ``<run dir>/tensorboard``."""
    jsonl: bool = True
    """Append one JSON object of metrics per logged step to ``<run dir>/metrics.jsonl``."""
    level: str = "INFO"
    """Python logging level of the console logger."""


# Slots for sections whose components are assembled later. Each component replaces the
# slot's type with its own config dataclass; until then no keys are accepted.
@dataclass
class PolicySlot:
    """Megatron-Core policy (model, optimizer, precision): defined by the policy package."""


@dataclass
class RolloutSlot:
    """vLLM rollout engine and sampling: defined by the rollout package."""


@dataclass
class RewardSlot:
    """Verifiable rewards: defined by the rewards package."""


@dataclass
class DataSlot:
    """Prompt data sets and batching: defined by the data package."""


@dataclass
class SFTSlot:
    """Supervised fine-tuning (cold start, distillation from jsonl traces)."""


@dataclass
class EvalSlot:
    """Evaluation (avg@k, pass@k, maj@k)."""


@dataclass
class RunConfig:
    """Everything one ``r1core train|sft|eval`` run is configured by."""

    run: RunSection = field(default_factory=RunSection)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    policy: PolicySlot = field(default_factory=PolicySlot)
    rollout: RolloutSlot = field(default_factory=RolloutSlot)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardSlot = field(default_factory=RewardSlot)
    data: DataSlot = field(default_factory=DataSlot)
    sft: SFTSlot = field(default_factory=SFTSlot)
    eval: EvalSlot = field(default_factory=EvalSlot)

    @property
    def checkpoint_directory(self) -> str:
        """``checkpoint.directory``, or ``<run dir>/checkpoints`` when left empty."""
        return self.checkpoint.directory or os.path.join(self.run.directory, "checkpoints")
