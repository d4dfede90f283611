"""The algorithm as one small config: which estimator, which loss, and their settings.

:class:`AlgorithmConfig` is what a run file names; it hands each component only its own
sub-config (:meth:`advantage_config`, :meth:`loss_config`). :meth:`preset` gives the
settings of the published recipes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from r1core.algos.advantages import ADVANTAGE_ESTIMATORS, AdvantageConfig
from r1core.algos.kl import KL_MODES
from r1core.algos.losses import POLICY_LOSSES, LossConfig
from r1core.algos.sampling.difficulty import DifficultyConfig
from r1core.algos.sampling.dynamic import DynamicSamplingConfig
from r1core.algos.sampling.length import LengthSchedule
from r1core.algos.sampling.overlong import OverlongConfig
from r1core.ops import AGGREGATIONS, KL_ESTIMATORS


@dataclass(frozen=True)
class AlgorithmConfig:
    """One RL algorithm.

    preset: the published recipe these settings start from (:data:`PRESETS`; empty: none).
        In a run configuration, ``algorithm.preset=grpo`` starts the section from that recipe
        and the ``algorithm.*`` keys given beside it change it.
    estimator: name in the advantage-estimator registry (``grpo``, ``drgrpo``, ``rloo``,
        ``reinforce++``, ``reinforce++-baseline``, ``gspo``).
    loss: name in the policy-loss registry (``grpo``, ``ppo``, ``dapo``, ``drgrpo``,
        ``gspo``, ``cispo``).
    clip_low, clip_high, dual_clip, aggregation, norm_length, is_cap, entropy_coef: see
        :class:`~r1core.algos.losses.LossConfig` (``None`` = the loss's default).
    kl_mode: ``loss`` (KL term in the loss), ``reward`` (per-token ``-kl_coef * KL`` added to
        the rewards before the advantages, see :func:`~r1core.algos.kl.kl_reward`) or
        ``off`` (no reference model needed).
    kl_estimator, kl_coef: estimator (k1, k2, k3) and weight of the KL.
    eps, gamma: see :class:`~r1core.algos.advantages.AdvantageConfig`.
    dynamic_sampling, overlong, difficulty: the sampling strategies (see
        :mod:`r1core.algos.sampling`).
    length_schedule: ``"step:tokens,..."`` generation budgets by step (DeepScaleR), empty for
        the constant ``trainer.max_response_tokens``.
    """

    preset: str = ""
    estimator: str = "grpo"
    loss: str = "grpo"
    clip_low: float | None = None
    clip_high: float | None = None
    dual_clip: float | None = None
    kl_mode: str = "off"
    kl_estimator: str = "k3"
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    aggregation: str | None = None
    norm_length: float | None = None
    is_cap: float | None = None
    eps: float = 1e-6
    gamma: float = 1.0
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    overlong: OverlongConfig = field(default_factory=OverlongConfig)
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    length_schedule: str = ""

    def __post_init__(self) -> None:
        if self.preset and self.preset not in PRESETS:
            raise KeyError(f"unknown algorithm preset {self.preset!r}; valid: {', '.join(sorted(PRESETS))}")
        ADVANTAGE_ESTIMATORS.get(self.estimator)
        POLICY_LOSSES.get(self.loss)
        if self.kl_mode not in KL_MODES:
            raise ValueError(f"unknown kl_mode {self.kl_mode!r}; valid: {', '.join(KL_MODES)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"unknown kl_estimator {self.kl_estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")
        if self.aggregation is not None and self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl_mode == "off" and self.kl_coef != 0:
            raise ValueError(f"kl_coef={self.kl_coef} with kl_mode='off'; set kl_mode to 'loss' or 'reward'")
        if self.length_schedule:
            LengthSchedule.parse(self.length_schedule)

    def budget_schedule(self, max_response_tokens: int) -> LengthSchedule:
        """Generation budget by step: ``length_schedule``, or ``max_response_tokens`` throughout.

        Raises:
            ValueError: a stage above ``max_response_tokens`` (which sizes the engine's context
                and Dr. GRPO's constant).
        """
        if not self.length_schedule:
            return LengthSchedule.constant(max_response_tokens)
        schedule = LengthSchedule.parse(self.length_schedule)
        if schedule.final_length > max_response_tokens:
            raise ValueError(f"algorithm.length_schedule reaches {schedule.final_length} tokens, above "
                             f"trainer.max_response_tokens={max_response_tokens}")
        return schedule

    @property
    def needs_reference(self) -> bool:
        """Whether the trainer must compute reference-policy log-probs."""
        return self.kl_mode != "off" and self.kl_coef != 0

    def advantage_config(self) -> AdvantageConfig:
        return AdvantageConfig(eps=self.eps, gamma=self.gamma)

    def loss_config(self) -> LossConfig:
        """The loss's config; the KL weight is 0 unless the KL is applied in the loss."""
        return LossConfig(
            clip_low=self.clip_low, clip_high=self.clip_high, dual_clip=self.dual_clip,
            kl_coef=self.kl_coef if self.kl_mode == "loss" else 0.0, kl_estimator=self.kl_estimator,
            entropy_coef=self.entropy_coef, aggregation=self.aggregation, norm_length=self.norm_length,
            is_cap=self.is_cap,
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> "AlgorithmConfig":
        """Settings of a published recipe, with ``overrides`` applied on top.

        Names: ``grpo``, ``dapo``, ``drgrpo``, ``gspo``, ``cispo``, ``rloo``,
        ``reinforce++``, ``reinforce++-baseline`` (values in :data:`PRESETS`).
        """
        if name not in PRESETS:
            raise KeyError(f"unknown algorithm preset {name!r}; valid: {', '.join(sorted(PRESETS))}")
        return replace(PRESETS[name], preset=name, **overrides)


# Published recipes. Values are the papers' (or their reference configs') choices.
PRESETS: dict[str, AlgorithmConfig] = {
    # DeepSeekMath GRPO: group std normalisation, k3 KL in the loss, per-sequence token mean.
    "grpo": AlgorithmConfig(estimator="grpo", loss="grpo", kl_mode="loss", kl_estimator="k3", kl_coef=0.04),
    # DAPO: clip-higher, token-level loss, no KL, dynamic sampling, overlong reward shaping
    # (a 4096-token soft zone before a 20480-token budget).
    "dapo": AlgorithmConfig(estimator="grpo", loss="dapo", clip_low=0.2, clip_high=0.28,
                            dynamic_sampling=DynamicSamplingConfig(enabled=True),
                            overlong=OverlongConfig(buffer_fraction=0.2)),
    # Dr. GRPO: no std, constant length normaliser, no KL.
    "drgrpo": AlgorithmConfig(estimator="drgrpo", loss="drgrpo"),
    "gspo": AlgorithmConfig(estimator="gspo", loss="gspo", clip_low=3e-4, clip_high=4e-4),
    "cispo": AlgorithmConfig(estimator="grpo", loss="cispo"),
    "rloo": AlgorithmConfig(estimator="rloo", loss="ppo"),
    # REINFORCE++: KL (k1) in the per-token reward, batch-whitened token returns. The
    # baseline variant moves the KL into the loss (k2), as its authors' scripts do.
    "reinforce++": AlgorithmConfig(estimator="reinforce++", loss="ppo", kl_mode="reward", kl_estimator="k1", kl_coef=0.01),
    "reinforce++-baseline": AlgorithmConfig(estimator="reinforce++-baseline", loss="ppo", kl_mode="loss", kl_estimator="k2", kl_coef=0.01),
}
