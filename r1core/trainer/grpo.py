"""The GRPO trainer: one step of R1-style RL, top to bottom.

    prompts -> rollouts (n per prompt) -> rewards in the worker pool -> overlong shaping
    -> dynamic-sampling refill -> advantages -> old and reference log-probs
    -> policy update -> weight sync -> metrics

Every stage passes one :class:`~r1core.batch.RolloutBatch` to the next; the sampling
strategies and the algorithm's numerics come from :mod:`r1core.algos`, configured in the
run's ``algorithm`` section. The policy (Megatron-Core), the rollout engine (vLLM) and the
reward scorer are built elsewhere and handed in; this module only orders the work and keeps
the host synchronisations to the one place that needs them (turning metrics into floats for
logging at the end of the step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from r1core.algos import AdvantageInputs, AlgorithmConfig, LossInputs, compute_advantages, compute_policy_loss, kl_reward
from r1core.algos.losses import resolve_config
from r1core.algos.mismatch import logprob_mismatch
from r1core.algos.sampling import DynamicSampling
from r1core.batch import (
    MicroBatch,
    Prompt,
    RolloutBatch,
    micro_batch_chunks,
    rl_micro_batches,
    to_response_aligned,
    to_sequence_aligned,
)
from r1core.ops.grpo_loss import aggregation_denominator
from r1core.parallel.layout import check_divisible
from r1core.parallel.topology import Topology, even_slices
from r1core.trainer.distributed import mean_metrics, reduce_step_metrics, set_loss_scales
from r1core.trainer.protocols import PromptSource, RewardScorer, RolloutEngine, TrainablePolicy

# Seeds of the engine's sampling. A step's seed is ``seed * STEP_SEED_STRIDE + step``, a prime
# stride so two runs' seeds never collide for any realistic step count; each refill round of
# a step adds ``ROUND_SEED_STRIDE`` (another prime) so its samples differ from the round
# before, and each data-parallel replica adds its first group's index, so replicas sample
# different groups whatever their number.
STEP_SEED_STRIDE = 1_000_003
ROUND_SEED_STRIDE = 7919


@dataclass
class GRPOConfig:
    """Shape of one GRPO step (``trainer``)."""

    steps: int = 50
    """Optimiser-step batches to train."""
    prompts_per_step: int = 32
    """Prompts sampled per step (before dynamic sampling drops any)."""
    samples_per_prompt: int = 8
    """Group size: responses per prompt."""
    max_response_tokens: int = 48
    """Generation budget per response (the largest stage when ``algorithm.length_schedule``
    is set)."""
    temperature: float = 1.0
    """Sampling temperature; the trainer's log-probs use the same one."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    epochs_per_step: int = 1
    """Passes over each step's batch (PPO epochs)."""
    mini_batches: int = 1
    """Optimiser updates per pass; with epochs_per_step = mini_batches = 1 the update is
    exactly on-policy and the old log-probs equal the current ones, so that forward is
    skipped."""
    micro_batch_size: int = 256
    """Samples per forward/backward (gradient accumulation inside a mini-batch). It does not
    change the update: each micro-batch's loss is weighted by its share of the mini-batch
    over every data-parallel replica (a token-mean is over all the step's tokens)."""
    micro_batch_tokens: int = 0
    """When > 0, a micro-batch also holds at most this many tokens (prompt + response), so
    long and short samples cost even forwards; a longer sample gets a micro-batch of its
    own. 0: by ``micro_batch_size`` only."""
    seed: int = 0
    """Seed of sampling and data order."""

    def __post_init__(self) -> None:
        for key in ("steps", "prompts_per_step", "samples_per_prompt", "max_response_tokens", "epochs_per_step",
                    "mini_batches", "micro_batch_size"):
            value = getattr(self, key)
            if value < 1:
                raise ValueError(f"trainer.{key} must be >= 1, got {value}")
        if not self.temperature > 0:
            raise ValueError(f"trainer.temperature must be > 0 (the log-probs divide by it), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"trainer.top_p must be in (0, 1], got {self.top_p}")
        if self.seed < 0:
            raise ValueError(f"trainer.seed must be >= 0, got {self.seed}")


@dataclass
class StepResult:
    metrics: dict[str, float]
    batch: RolloutBatch | None = field(default=None, repr=False)


class GRPOTrainer:
    """Runs GRPO steps over a policy, a rollout engine and a reward.

    Under data parallelism (``topology``) every rank draws the same global batch of
    ``prompts_per_step`` prompts and keeps its replica's contiguous share of whole groups;
    the replica's leader generates and scores them and broadcasts the samples to the other
    ranks of its model-parallel group. Dynamic sampling counts the kept groups over the
    data-parallel group to decide the refill rounds, then pools and re-splits them evenly
    (:meth:`_rebalance`), so every rank calls ``train_step`` the same number of times.
    Under pipeline parallelism every stage trains on the same samples; after the update each
    replica's stages stream their layers into its leader's engine
    (``r1core.rollout.sync_policy_weights``, all replicas in one call), and the last stage's
    loss metrics are broadcast to the other stages once per step.

    Args:
        config: step shape (:class:`GRPOConfig`).
        algorithm: estimator, loss, KL and the sampling strategies
            (:class:`r1core.algos.AlgorithmConfig`).
        policy: the policy trained (:class:`~r1core.trainer.protocols.TrainablePolicy`).
        rollout: the engine that samples (:class:`~r1core.trainer.protocols.RolloutEngine`).
        prompts: a :class:`~r1core.trainer.protocols.PromptSource`; when it is a
            ``PromptStream`` with a pass-rate tracker, every step's groups update it.
        decode: token ids -> text, for the rewards.
        score: a :class:`~r1core.trainer.protocols.RewardScorer`.
        ref_policy: reference model for the KL term; required when the algorithm uses a
            KL, and never built or run otherwise.
        stop: token ids that end a response besides the engine's own EOS ids (the
            tokenizer's EOS, a chat template's end of turn).
        topology: this rank's place among the trainer's ranks (default: one process).
            ``rollout`` and ``score`` are used on the model-parallel leaders only and may be
            None elsewhere.
    """

    def __init__(
        self,
        config: GRPOConfig,
        algorithm: AlgorithmConfig,
        policy: TrainablePolicy | None,
        rollout: RolloutEngine | None,
        prompts: PromptSource,
        decode: Callable[[list[int]], str],
        score: RewardScorer | None,
        *,
        ref_policy: TrainablePolicy | None = None,
        topology: Topology | None = None,
        stop: Sequence[int] = (),
    ) -> None:
        self.topology = topology or Topology()
        check_divisible(config.prompts_per_step, self.topology.dp_size, what="trainer.prompts_per_step")
        if algorithm.needs_reference and ref_policy is None:
            raise ValueError(f"the algorithm applies a KL ({algorithm.kl_mode}, coef {algorithm.kl_coef}) but no ref_policy was given")
        self.config = config
        self.algorithm = algorithm
        self.budgets = algorithm.budget_schedule(config.max_response_tokens)
        self.loss_config = algorithm.loss_config()
        if self.loss_config.norm_length is None:
            # Dr. GRPO's constant: the generation budget (the loss op's own default, the
            # padded width of a micro-batch, would change with every micro-batch's prompts).
            self.loss_config = replace(self.loss_config, norm_length=float(config.max_response_tokens))
        # The loss's aggregation once its defaults are filled in: it decides what each
        # micro-batch's share of the global batch is (see set_loss_scales).
        self._resolved_loss = resolve_config(algorithm.loss, self.loss_config)
        self.dynamic_sampling = (DynamicSampling(algorithm.dynamic_sampling, config.prompts_per_step)
                                 if algorithm.dynamic_sampling.enabled else None)
        self.policy = policy
        self.rollout = rollout
        self.prompts = prompts
        self.decode = decode
        self.score = score
        self.ref_policy = ref_policy if algorithm.needs_reference else None
        self.stop = sorted(set(stop))
        self.step_index = 0

    @property
    def local_prompts(self) -> int:
        """Prompts this data-parallel replica trains on per generation round."""
        return self.config.prompts_per_step // self.topology.dp_size

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs besides the model and optimiser: step and data position."""
        return {"step": self.step_index, "prompts": self.prompts.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_index = int(state["step"])
        self.prompts.load_state_dict(state["prompts"])

    # ------------------------------------------------------------------ sampling

    def _generate(self, problems: list[Prompt], seed: int, first_group: int, budget: int) -> RolloutBatch:
        cfg = self.config
        # Engines that take no stop list (scripted ones in tests) never get one they would reject.
        stop = {"stop": self.stop} if self.stop else {}
        groups = self.rollout.generate(
            [p.tokens for p in problems], n=cfg.samples_per_prompt, max_tokens=budget,
            temperature=cfg.temperature, top_p=cfg.top_p, seed=seed, **stop,
        )
        samples = [sample for group in groups for sample in group]
        return RolloutBatch(
            cfg.samples_per_prompt, [p.tokens for p in problems], [p.uid for p in problems],
            [p.gold for p in problems], torch.arange(first_group, first_group + len(problems)),
            [s.token_ids for s in samples], [torch.tensor(s.logprobs, dtype=torch.float32) for s in samples],
            torch.zeros(len(samples)), torch.tensor([s.finish_reason == "length" for s in samples], dtype=torch.bool),
            routes=_routes(samples),
        )

    def _reward(self, batch: RolloutBatch) -> tuple[RolloutBatch, dict[str, float]]:
        responses = [self.decode(ids) for ids in batch.response_tokens]
        golds = [batch.golds[batch.row_group(row)] for row in range(len(batch))]
        totals, components, num_failed = self.score(responses, golds)
        scored = batch.with_fields(
            rewards=torch.tensor(totals, dtype=torch.float32),
            components={name: torch.tensor(v, dtype=torch.float32) for name, v in components.items()},
        )
        return scored, {"reward_failures": float(num_failed)}

    def _rollout_round(self, problems: list[Prompt], seed: int, first_group: int, budget: int,
                       timings: dict[str, float]) -> tuple[RolloutBatch, dict[str, float]]:
        """Generate and score ``problems`` on the replica's leader; the other ranks of its
        model-parallel group get the scored batch in one broadcast."""
        topology = self.topology
        payload: tuple[RolloutBatch, dict[str, float]] | None = None
        if topology.is_leader:
            start = time.perf_counter()
            batch = self._generate(problems, seed, first_group, budget)
            timings["generate_s"] += time.perf_counter() - start
            start = time.perf_counter()
            payload = self._reward(batch)
            timings["reward_s"] += time.perf_counter() - start
            if topology.mp_size == 1:
                return payload
        start = time.perf_counter()
        payload = topology.broadcast_from_leader(payload)
        timings["broadcast_s"] = timings.get("broadcast_s", 0.0) + time.perf_counter() - start
        return payload

    def _sample(self, step_seed: int, budget: int) -> tuple[RolloutBatch, dict[str, float]]:
        """Rollouts, rewards, overlong shaping and the dynamic-sampling refill: this replica's
        share of the step's training groups."""
        cfg, topology = self.config, self.topology
        # Every rank draws the global batch (the stream stays in step everywhere) and keeps
        # its replica's contiguous share of whole groups. Group indices and per-prompt seeds
        # are those of the global batch, so a replica's samples do not depend on how many
        # replicas there are.
        local = self.local_prompts
        offset = topology.dp_rank * local
        timings: dict[str, float] = {"generate_s": 0.0, "reward_s": 0.0}
        metrics: dict[str, float] = {}

        def draw(round_index: int) -> RolloutBatch:
            problems = self.prompts.next(cfg.prompts_per_step)[offset : offset + local]
            seed = step_seed + ROUND_SEED_STRIDE * round_index + offset
            batch, reward_metrics = self._rollout_round(
                problems, seed, round_index * cfg.prompts_per_step + offset, budget, timings)
            metrics.update(reward_metrics)
            start = time.perf_counter()
            batch = self.algorithm.overlong.apply(batch, budget)
            timings["reward_s"] += time.perf_counter() - start
            tracker = getattr(self.prompts, "tracker", None)
            if tracker is not None:
                tracker.update(batch)
            return batch

        batch = draw(0)
        metrics["reward_mean_all"] = float(batch.rewards.mean())
        if self.dynamic_sampling is not None:
            total = lambda kept: int(topology.dp_all_reduce(kept, op="sum"))  # noqa: E731
            batch, stats = self.dynamic_sampling.run(batch, draw, total=total)
            metrics.update(stats.as_metrics())
            if topology.dp_size > 1:
                batch = self._rebalance(batch)
            elif batch.num_groups == 0:
                raise RuntimeError("dynamic sampling kept no group: every group had equal outcomes in every round")
            else:
                batch = self.dynamic_sampling.truncate(batch)
        metrics.update(timings)
        return batch, metrics

    def _rebalance(self, kept: RolloutBatch) -> RolloutBatch:
        """Dynamic sampling over replicas: pool every replica's kept groups, keep the first
        (by generation order) ``prompts_per_step`` of them -- or the largest multiple of the
        data-parallel size there is -- and give each replica an equal contiguous share.

        Filtering leaves replicas with unequal numbers of groups; pooling them (one
        all-gather of the kept samples, as a single controller would collect them) stops
        the refill as soon as the replicas together have a batch, and every replica then
        trains on the same number of groups. With fewer kept groups than replicas, the
        replicas without one repeat a kept group at loss weight 0, so that all of them
        still step together."""
        cfg, topology = self.config, self.topology
        pooled = [b for b in topology.dp_all_gather(kept) if b.num_groups]
        if not pooled:
            raise RuntimeError("dynamic sampling kept no group: every group had equal outcomes in every round")
        everything = RolloutBatch.concat(pooled)
        order = sorted(range(everything.num_groups), key=lambda g: int(everything.group_index[g]))
        per_replica = min(len(order), cfg.prompts_per_step) // topology.dp_size
        if per_replica == 0:
            mine = [order[topology.dp_rank % len(order)]]
            batch = everything.take_groups(mine)
            if topology.dp_rank >= len(order):
                batch = batch.with_fields(loss_weights=torch.zeros(len(batch)))
            return batch
        start = topology.dp_rank * per_replica
        return everything.take_groups(order[start : start + per_replica])

    # ------------------------------------------------------------------ scoring

    def _advantages(self, batch: RolloutBatch, ref_logp: list[torch.Tensor] | None) -> RolloutBatch:
        """The batch with response-aligned advantages ``[B, R]``."""
        mask = batch.response_mask()
        token_rewards = None
        if self.algorithm.kl_mode == "reward" and ref_logp is not None:
            width = mask.shape[1]
            ones = [1] * len(batch)
            token_rewards = kl_reward(
                to_sequence_aligned(batch.rollout_logp, ones, width), to_sequence_aligned(ref_logp, ones, width),
                mask, coef=self.algorithm.kl_coef, estimator=self.algorithm.kl_estimator,
            )
        out = compute_advantages(
            self.algorithm.estimator,
            AdvantageInputs(batch.rewards, mask, group_size=batch.group_size, token_rewards=token_rewards),
            self.algorithm.advantage_config(),
        )
        return batch.with_fields(advantages=out.advantages.float())

    def _logprobs(self, model: TrainablePolicy, batch: RolloutBatch) -> list[torch.Tensor]:
        """Per-row response-aligned log-probs under ``model`` (no grad), in micro-batches."""
        out: list[torch.Tensor] = []
        lengths = [p + r for p, r in zip(batch.prompt_lengths, batch.response_lengths.tolist())]
        for rows in micro_batch_chunks(lengths, self.config.micro_batch_size, self.config.micro_batch_tokens):
            # Rollout routing replay: a MoE policy routes each token to the experts the engine
            # chose when it sampled, so old, reference and updated log-probs score the same
            # experts (the update replays them through MicroBatch.routes).
            replay = {} if batch.routes is None else {"routes": [batch.routes[r] for r in rows]}
            logp = model.logprobs(batch.sequences(rows), temperature=self.config.temperature, **replay)
            out += to_response_aligned(logp, [batch.prompt_lengths[r] for r in rows],
                                       [len(batch.response_tokens[r]) for r in rows])
        return out

    def loss_fn(self, logp: torch.Tensor, entropy: torch.Tensor | None, micro: MicroBatch):
        """The policy loss of one micro-batch (called by ``Policy.train_step``)."""
        mask = micro.mask
        # On-policy update: the behaviour policy is the current one, ratio = 1.
        old_logp = micro.old_logp if micro.old_logp is not None else logp.detach()
        inputs = LossInputs(
            logp, old_logp, micro.advantages, mask,
            ref_logp=micro.ref_logp if self.algorithm.kl_mode == "loss" else None,
            rollout_logp=micro.rollout_logp if self.loss_config.is_cap is not None else None,
            entropy=entropy,
        )
        loss, metrics = compute_policy_loss(self.algorithm.loss, inputs, self.loss_config)
        # The micro-batch's share of the global batch's loss (its own aggregate is over its
        # own tokens or rows only).
        loss = loss * micro.loss_scale
        mismatch = logprob_mismatch(micro.rollout_logp, logp.detach(), mask > 0)
        metrics["logprob_mismatch_mean"] = mismatch["logprob_mismatch_mean"]
        metrics["logprob_mismatch_max"] = mismatch["logprob_mismatch_max"]
        if entropy is not None:
            weight = mask.float()
            metrics["entropy"] = (entropy.detach() * weight).sum() / weight.sum().clamp(min=1)
        return loss, metrics

    # ------------------------------------------------------------------ one step

    def step(self) -> StepResult:
        """Run one GRPO step; return its metrics as floats."""
        cfg = self.config
        step_start = time.perf_counter()
        seed = cfg.seed * STEP_SEED_STRIDE + self.step_index
        batch, metrics = self._sample(seed, self.budgets(self.step_index))

        start = time.perf_counter()
        ref_logp = None if self.ref_policy is None else self._logprobs(self.ref_policy, batch)
        batch = self._advantages(batch, ref_logp)
        on_policy = cfg.epochs_per_step * cfg.mini_batches == 1
        old_logp = None if on_policy else self._logprobs(self.policy, batch)
        metrics["logprob_s"] = time.perf_counter() - start

        start = time.perf_counter()
        update_metrics: list[dict[str, torch.Tensor]] = []
        generator = torch.Generator().manual_seed(seed)
        loss_ref = ref_logp if self.algorithm.kl_mode == "loss" else None
        for _ in range(cfg.epochs_per_step):
            order = torch.randperm(len(batch), generator=generator).tolist() if not on_policy else list(range(len(batch)))
            for rows in self._mini_batch_rows(order):
                micro = rl_micro_batches(batch, rows, cfg.micro_batch_size, old_logp=old_logp, ref_logp=loss_ref,
                                         max_tokens=cfg.micro_batch_tokens)
                agg = self._resolved_loss
                set_loss_scales(micro, [aggregation_denominator(m.mask.sum(1), agg.aggregation, agg.norm_length)
                                        for m in micro], self.topology)
                update_metrics.append(
                    self.policy.train_step(micro, self.loss_fn, temperature=cfg.temperature, return_entropy=True)
                )
        metrics["update_s"] = time.perf_counter() - start

        start = time.perf_counter()
        sync_weights(self.policy, self.rollout if self.topology.is_leader else None, self.topology)
        metrics["sync_s"] = time.perf_counter() - start

        # The one host synchronisation of the step: metrics become floats for logging. The
        # loss and the metrics computed with it exist on the last pipeline stage only; its
        # means (one transfer) reach the other stages in one broadcast.
        last = self.topology.is_last_stage
        metrics.update(self.topology.broadcast_from_last_stage(mean_metrics(update_metrics) if last else None))
        metrics.update(batch_metrics(batch))
        step_seconds = time.perf_counter() - step_start
        metrics["step_s"] = step_seconds
        metrics["tokens_per_second"] = metrics["train_tokens"] / step_seconds
        if self.topology.mp_size > 1:
            # The replica's metrics are its leader's: the other ranks trained on the same
            # samples, but their wall times (no generation, their own stage) differ.
            metrics = self.topology.broadcast_from_leader(metrics)
        if self.topology.dp_size > 1:
            # Replica metrics -> run metrics (identical on every rank); tokens/s from the
            # global token count over the slowest replica's step time.
            metrics = reduce_step_metrics(self.topology.dp_all_gather(metrics))
        self.step_index += 1
        return StepResult(metrics, batch)

    def _mini_batch_rows(self, order: list[int]) -> list[list[int]]:
        """``order`` split into the optimiser steps of one pass.

        One process keeps its ceil-sized chunks. Data-parallel replicas may hold different
        numbers of samples (dynamic sampling), and every replica must call ``train_step``
        exactly ``mini_batches`` times or the gradient all-reduce hangs, so there the split
        is into exactly ``mini_batches`` near-equal chunks."""
        cfg = self.config
        if self.topology.dp_size == 1:
            size = -(-len(order) // cfg.mini_batches)
            return [order[start : start + size] for start in range(0, len(order), size)]
        # Collective, so a replica short of samples stops every replica, not only itself.
        fewest = int(self.topology.dp_all_reduce(len(order), op="min"))
        if fewest < cfg.mini_batches:
            raise RuntimeError(
                f"a data-parallel replica kept {fewest} samples this step, fewer than "
                f"trainer.mini_batches={cfg.mini_batches} optimiser steps need"
            )
        return [order[part] for part in even_slices(len(order), cfg.mini_batches)]


def batch_metrics(batch: RolloutBatch) -> dict[str, float]:
    """Rewards, lengths and token counts of the samples a step trained on."""
    lengths = batch.response_lengths.float()
    metrics = {
        "reward_mean": float(batch.rewards.mean()),
        "reward_std": float(batch.rewards.std()) if len(batch) > 1 else 0.0,
        "response_length_mean": float(lengths.mean()),
        "response_length_max": float(lengths.max()),
        "truncation_rate": float(batch.truncated.float().mean()),
        "num_samples": float(len(batch)),
        "train_tokens": float(sum(batch.prompt_lengths) + int(batch.response_lengths.sum())),
    }
    for name, values in batch.components.items():
        metrics[f"reward/{name}"] = float(values.mean())
    return metrics


def sync_weights(policy: TrainablePolicy, rollout: RolloutEngine | None, topology: Topology | None = None) -> None:
    """The one weight-sync entry point of the trainer; call it on every rank.

    In one process the engine reads ``policy.iter_hf_weights()`` directly. Under torchrun
    every replica's leader passes its engine and the other ranks ``None``:
    ``r1core.rollout.sync_policy_weights`` then has every tensor/expert-parallel rank take
    part in each parameter's gather, and under pipeline parallelism the other stages'
    leaders stream their layers to the replica's leader, all replicas in the same call.
    """
    topology = topology or Topology()
    if not topology.distributed:
        if rollout is None:
            raise ValueError("sync_weights in one process needs the rollout engine")
        rollout.sync_weights(policy)
        return
    # Imported here: r1core.rollout pulls in the weight-transfer machinery, which a trainer
    # that never syncs (tests with scripted engines) does not need.
    from r1core.rollout.policy_sync import sync_policy_weights

    sync_policy_weights(policy, rollout)


def _routes(samples: list[Any]) -> list[Any] | None:
    """The engine's per-sample MoE routes (rollout routing replay), or None when it gave none."""
    routes = [getattr(sample, "routes", None) for sample in samples]
    return routes if any(r is not None for r in routes) else None
