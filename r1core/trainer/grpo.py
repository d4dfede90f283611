"""The GRPO trainer: one step of R1-style RL, top to bottom.

    prompts -> rollouts (n per prompt) -> rewards in the worker pool -> advantages
    -> dynamic-sampling refill -> old and reference log-probs -> policy update
    -> weight sync -> metrics

The policy (Megatron-Core), the rollout engine (vLLM), the rewards and the algorithm
pieces are built elsewhere and handed in; this module only orders the work and keeps the
host synchronisations to the one place that needs them (turning metrics into floats for
logging at the end of the step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol, Sequence

import torch

from r1core.algos import AdvantageInputs, AlgorithmConfig, LossInputs, compute_advantages, compute_policy_loss, kl_reward
from r1core.algos.losses import resolve_config
from r1core.algos.sampling.groups import GroupBatch
from r1core.algos.sampling.overlong import OverlongFilter, OverlongRewardShaping
from r1core.ops.grpo_loss import aggregation_denominator
from r1core.trainer.config import GRPOConfig
from r1core.parallel.layout import check_divisible
from r1core.parallel.topology import Topology, even_slices
from r1core.trainer.distributed import global_loss_scales, mean_metrics, reduce_step_metrics
from r1core.trainer.samples import SampleBatch, gather_response, micro_batches, scatter_response


@dataclass
class Prompt:
    """A tokenised prompt with its verifiable answer. ``uid`` identifies it across steps."""

    prompt_ids: list[int]
    gold: str
    uid: int


class PromptSource(Protocol):
    """Endless, resumable stream of training prompts (``r1core.algos.sampling.PromptStream``)."""

    def next(self, count: int) -> list[Prompt]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RewardScorer(Protocol):
    def __call__(self, responses: list[str], golds: list[str]) -> tuple[list[float], dict[str, list[float]], int]: ...


@dataclass
class StepResult:
    metrics: dict[str, float]
    batch: SampleBatch | None = field(default=None, repr=False)


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
        algorithm: estimator, loss, clipping, KL and entropy settings
            (:class:`r1core.algos.AlgorithmConfig`).
        policy: ``r1core.models.Policy`` (``logprobs``, ``train_step``, ``iter_hf_weights``).
        rollout: ``r1core.rollout.VLLMRollout`` (``generate``, ``sync_weights``).
        prompts: a :class:`PromptSource`.
        decode: token ids -> text, for the rewards.
        score: ``(responses, golds) -> (totals, {component: scores}, num_failed)``.
        ref_policy: reference model for the KL term; required when the algorithm uses a
            KL, and never built or run otherwise.
        topology: this rank's place among the trainer's ranks (default: one process).
            ``rollout`` and ``score`` are used on the model-parallel leaders only and may be
            None elsewhere.
    """

    def __init__(
        self,
        config: GRPOConfig,
        algorithm: AlgorithmConfig,
        policy: Any,
        rollout: Any,
        prompts: PromptSource,
        decode: Callable[[list[int]], str],
        score: RewardScorer,
        *,
        ref_policy: Any | None = None,
        topology: Topology | None = None,
    ) -> None:
        self.topology = topology or Topology()
        check_divisible(config.prompts_per_step, self.topology.dp_size, what="trainer.prompts_per_step")
        if algorithm.needs_reference and ref_policy is None:
            raise ValueError(f"the algorithm applies a KL ({algorithm.kl_mode}, coef {algorithm.kl_coef}) but no ref_policy was given")
        self.config = config
        self.algorithm = algorithm
        self.loss_config = algorithm.loss_config()
        if self.loss_config.norm_length is None:
            # Dr. GRPO's constant: the generation budget (the loss op's own default, the
            # padded width of a micro-batch, would change with every micro-batch's prompts).
            self.loss_config = replace(self.loss_config, norm_length=float(config.max_response_tokens))
        # The loss's aggregation once its defaults are filled in: it decides what each
        # micro-batch's share of the global batch is (see global_loss_scales).
        self._resolved_loss = resolve_config(algorithm.loss, self.loss_config)
        self.policy = policy
        self.rollout = rollout
        self.prompts = prompts
        self.decode = decode
        self.score = score
        self.ref_policy = ref_policy if algorithm.needs_reference else None
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

    # ------------------------------------------------------------------ phases

    def _generate(self, problems: list[Prompt], seed: int, first_group: int) -> SampleBatch:
        cfg = self.config
        groups = self.rollout.generate(
            [p.prompt_ids for p in problems], n=cfg.samples_per_prompt, max_tokens=cfg.max_response_tokens,
            temperature=cfg.temperature, top_p=cfg.top_p, seed=seed,
        )
        prompt_ids, response_ids, logps, group_ids, truncated, golds = [], [], [], [], [], []
        for group, (problem, samples) in enumerate(zip(problems, groups), start=first_group):
            for sample in samples:
                prompt_ids.append(problem.prompt_ids)
                response_ids.append(sample.token_ids)
                logps.append(torch.tensor(sample.logprobs, dtype=torch.float32))
                group_ids.append(group)
                truncated.append(sample.finish_reason == "length")
                golds.append(problem.gold)
        batch = SampleBatch(
            prompt_ids, response_ids, logps, torch.tensor(group_ids), torch.zeros(len(prompt_ids)),
            torch.tensor(truncated), extras={"golds": golds},
        )
        return batch

    def _reward(self, batch: SampleBatch) -> dict[str, float]:
        responses = [self.decode(ids) for ids in batch.response_ids]
        totals, components, num_failed = self.score(responses, batch.extras["golds"])
        batch.rewards = torch.tensor(totals, dtype=torch.float32)
        batch.extras["components"] = {name: torch.tensor(v, dtype=torch.float32) for name, v in components.items()}
        return {"reward_failures": float(num_failed)}

    def _rollout_round(
        self, problems: list[Prompt], seed: int, first_group: int, timings: dict[str, float]
    ) -> tuple[SampleBatch, dict[str, float]]:
        """Generate and score ``problems`` on the replica's leader; the other ranks of its
        model-parallel group get the scored samples in one broadcast."""
        topology = self.topology
        payload: dict[str, Any] | None = None
        if topology.is_leader:
            start = time.perf_counter()
            batch = self._generate(problems, seed, first_group)
            timings["generate_s"] += time.perf_counter() - start
            start = time.perf_counter()
            extra = self._reward(batch)
            timings["reward_s"] += time.perf_counter() - start
            if topology.mp_size == 1:
                return batch, extra
            payload = {
                "response_ids": batch.response_ids, "rollout_logp": batch.rollout_logp,
                "truncated": batch.truncated, "rewards": batch.rewards,
                "components": batch.extras["components"], "extra": extra,
            }
        start = time.perf_counter()
        payload = topology.broadcast_from_leader(payload)
        timings["broadcast_s"] = timings.get("broadcast_s", 0.0) + time.perf_counter() - start
        if topology.is_leader:
            return batch, extra
        size = self.config.samples_per_prompt
        batch = SampleBatch(
            [p.prompt_ids for p in problems for _ in range(size)], payload["response_ids"], payload["rollout_logp"],
            torch.arange(first_group, first_group + len(problems)).repeat_interleave(size),
            payload["rewards"], payload["truncated"],
            extras={"golds": [p.gold for p in problems for _ in range(size)], "components": payload["components"]},
        )
        return batch, dict(payload["extra"])

    def _shape(self, batch: SampleBatch) -> None:
        """Overlong reward shaping and filtering (``r1core.algos.sampling``), in place."""
        cfg = self.config
        if not cfg.overlong_buffer and not cfg.overlong_filter:
            return
        groups, size = len(batch) // cfg.samples_per_prompt, cfg.samples_per_prompt
        grouped = GroupBatch(
            list(range(groups)), batch.rewards.view(groups, size), batch.response_lengths.view(groups, size),
            batch.truncated.view(groups, size),
        )
        if cfg.overlong_buffer:
            grouped = OverlongRewardShaping(cfg.max_response_tokens, cfg.overlong_buffer, cfg.overlong_penalty)(grouped)
        if cfg.overlong_filter:
            grouped = OverlongFilter()(grouped)
        batch.rewards = grouped.rewards.reshape(-1)
        batch.loss_weights = grouped.loss_weight.reshape(-1)

    def _sample(self, step_seed: int) -> tuple[SampleBatch, dict[str, float]]:
        """Rollouts, rewards, advantages, and the dynamic-sampling refill."""
        cfg = self.config
        topology = self.topology
        # Every rank draws the global batch (the stream stays in step everywhere) and keeps
        # its replica's contiguous share of whole groups. Group ids and per-prompt seeds are
        # those of the global batch, so a replica's samples do not depend on how many
        # replicas there are.
        local = self.local_prompts
        offset = topology.dp_rank * local
        timings: dict[str, float] = {"generate_s": 0.0, "reward_s": 0.0}
        kept: list[SampleBatch] = []
        num_kept_groups = dropped = tries = 0
        extra: dict[str, float] = {}
        while True:
            problems = self.prompts.next(cfg.prompts_per_step)[offset : offset + local]
            batch, reward_extra = self._rollout_round(
                problems, step_seed + 7919 * tries + offset, tries * cfg.prompts_per_step + offset, timings
            )
            extra.update(reward_extra)
            start = time.perf_counter()
            self._shape(batch)
            timings["reward_s"] += time.perf_counter() - start
            batch.advantages, zero_variance = self._advantages(batch)
            if tries == 0:
                extra["reward_mean_all"] = float(batch.rewards.mean())
            if not cfg.dynamic_sampling:
                kept.append(batch)
                break
            keep = (~zero_variance).nonzero().squeeze(1).tolist()
            dropped += (len(batch) - len(keep)) // cfg.samples_per_prompt
            if keep:
                kept.append(batch.select(keep))
                num_kept_groups += len(keep) // cfg.samples_per_prompt
            tries += 1
            # Refill until the replicas together hold a full batch; the count is summed over
            # the data-parallel group, so every replica runs the same rounds.
            if topology.dp_all_reduce(num_kept_groups, op="sum") >= cfg.prompts_per_step or tries > cfg.max_refill_tries:
                break
        if cfg.dynamic_sampling and topology.dp_size > 1:
            merged = self._rebalance(kept)
        else:
            if not kept or sum(len(b) for b in kept) == 0:
                raise RuntimeError("dynamic sampling kept no group: every group had equal rewards in every try")
            merged = _concat(kept)
        extra.update(timings)
        if cfg.dynamic_sampling:
            extra.update({"groups_dropped": float(dropped), "sampling_tries": float(tries)})
        return merged, extra

    def _rebalance(self, kept: list[SampleBatch]) -> SampleBatch:
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
        size = cfg.samples_per_prompt
        local = _concat(kept) if kept else None
        pooled = [b for b in topology.dp_all_gather(local) if b is not None and len(b)]
        if not pooled:
            raise RuntimeError("dynamic sampling kept no group: every group had equal rewards in every try")
        everything = _concat(pooled)
        groups = sorted(set(everything.group_ids.tolist()))
        per_replica = min(len(groups), cfg.prompts_per_step) // topology.dp_size
        if per_replica == 0:
            mine, weight = [groups[topology.dp_rank % len(groups)]], float(topology.dp_rank < len(groups))
        else:
            start = topology.dp_rank * per_replica
            mine, weight = groups[start : start + per_replica], 1.0
        rank_of = {g: i for i, g in enumerate(mine)}
        rows = sorted((i for i, g in enumerate(everything.group_ids.tolist()) if g in rank_of),
                      key=lambda i: (rank_of[int(everything.group_ids[i])], i))
        batch = everything.select(rows)
        if len(batch) != len(mine) * size:
            raise RuntimeError(f"rebalanced batch has {len(batch)} samples for {len(mine)} groups of {size}")
        if weight == 0.0:
            batch.loss_weights = torch.zeros(len(batch))
        return batch

    def _advantages(self, batch: SampleBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Response-aligned advantages ``[B, R]`` and the zero-variance flags ``[B]``."""
        mask = batch.response_mask()
        token_rewards = None
        if self.algorithm.kl_mode == "reward" and self.ref_policy is not None:
            # KL in the reward needs the reference log-probs before the advantages.
            ref = self._logprobs(self.ref_policy, batch)
            ref_padded = scatter_response(ref, [1] * len(batch), mask.shape[1])
            rollout = scatter_response(batch.rollout_logp, [1] * len(batch), mask.shape[1])
            token_rewards = kl_reward(
                rollout, ref_padded, mask, coef=self.algorithm.kl_coef, estimator=self.algorithm.kl_estimator
            )
        out = compute_advantages(
            self.algorithm.estimator,
            AdvantageInputs(batch.rewards, mask, group_ids=batch.group_ids, token_rewards=token_rewards),
            self.algorithm.advantage_config(),
        )
        return out.advantages.float(), out.zero_variance

    def loss_fn(self, logp: torch.Tensor, entropy: torch.Tensor | None, micro: dict[str, Any]):
        """The policy loss of one micro-batch (called by ``Policy.train_step``)."""
        mask = micro.mask
        old_logp = micro.old_logp
        if old_logp is None:
            # On-policy update: the behaviour policy is the current one, ratio = 1.
            old_logp = logp.detach()
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
        weight = mask.float()
        count = weight.sum().clamp(min=1)
        gap = (logp.detach() - micro.rollout_logp).abs() * (weight > 0)
        metrics["logprob_mismatch_mean"] = gap.sum() / count
        metrics["logprob_mismatch_max"] = gap.max()
        if entropy is not None:
            metrics["entropy"] = (entropy.detach() * weight).sum() / count
        return loss, metrics

    def _logprobs(self, model: Any, batch: SampleBatch) -> list[torch.Tensor]:
        """Per-sample response log-probs under ``model`` (no grad), in micro-batches."""
        out: list[torch.Tensor] = []
        step = self.config.micro_batch_size
        for start in range(0, len(batch), step):
            rows = list(range(start, min(start + step, len(batch))))
            logp = model.logprobs(batch.sequences(rows), temperature=self.config.temperature)
            out += gather_response(
                logp, [len(batch.prompt_ids[i]) for i in rows], [len(batch.response_ids[i]) for i in rows]
            )
        return out

    # ------------------------------------------------------------------ one step

    def step(self) -> StepResult:
        """Run one GRPO step; return its metrics as floats."""
        cfg = self.config
        step_start = time.perf_counter()
        seed = cfg.seed * 1_000_003 + self.step_index
        batch, metrics = self._sample(seed)

        start = time.perf_counter()
        on_policy = cfg.epochs_per_step * cfg.mini_batches == 1
        old_logp = None if on_policy else self._logprobs(self.policy, batch)
        ref_logp = None if self.ref_policy is None else self._logprobs(self.ref_policy, batch)
        metrics["logprob_s"] = time.perf_counter() - start

        start = time.perf_counter()
        update_metrics: list[dict[str, torch.Tensor]] = []
        generator = torch.Generator().manual_seed(seed)
        for _ in range(cfg.epochs_per_step):
            order = torch.randperm(len(batch), generator=generator).tolist() if not on_policy else list(range(len(batch)))
            for rows in self._mini_batch_rows(order):
                micro = micro_batches(batch, cfg.micro_batch_size, old_logp=old_logp, ref_logp=ref_logp, order=rows)
                self._set_loss_scales(micro)
                update_metrics.append(
                    self.policy.train_step(micro, self.loss_fn, temperature=cfg.temperature, return_entropy=True)
                )
        metrics["update_s"] = time.perf_counter() - start

        start = time.perf_counter()
        self._sync_weights()
        metrics["sync_s"] = time.perf_counter() - start

        # The one host synchronisation of the step: metrics become floats for logging. The
        # loss and the metrics computed with it exist on the last pipeline stage only; its
        # means (one transfer) reach the other stages in one broadcast.
        last = self.topology.is_last_stage
        metrics.update(self.topology.broadcast_from_last_stage(mean_metrics(update_metrics) if last else None))
        lengths = batch.response_lengths.float()
        tokens = int(sum(len(p) + len(r) for p, r in zip(batch.prompt_ids, batch.response_ids)))
        metrics.update(
            {
                "reward_mean": float(batch.rewards.mean()),
                "reward_std": float(batch.rewards.std()) if len(batch) > 1 else 0.0,
                "response_length_mean": float(lengths.mean()),
                "response_length_max": float(lengths.max()),
                "truncation_rate": float(batch.truncated.float().mean()),
                "num_samples": float(len(batch)),
            }
        )
        for name, values in batch.extras.get("components", {}).items():
            metrics[f"reward/{name}"] = float(values.mean())
        step_seconds = time.perf_counter() - step_start
        metrics["step_s"] = step_seconds
        metrics["tokens_per_second"] = tokens / step_seconds
        metrics["train_tokens"] = float(tokens)
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

    def _set_loss_scales(self, micro: list[dict[str, Any]]) -> None:
        """Weight each micro-batch's loss by its share of the optimiser step's global batch
        (all micro-batches of all replicas): a DAPO token-mean is then over every token of
        the step, not a mean of micro-batch means. One host all-reduce over replicas."""
        agg = self._resolved_loss
        denominators = [aggregation_denominator(m.mask.sum(1), agg.aggregation, agg.norm_length) for m in micro]
        for m, scale in zip(micro, global_loss_scales(denominators, self.topology)):
            m.loss_scale = scale

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

    def _sync_weights(self) -> None:
        """Push the updated policy to this replica's engine (collective; every rank calls)."""
        sync_weights(self.policy, self.rollout if self.topology.is_leader else None, self.topology)


def sync_weights(policy: Any, rollout: Any | None, topology: Topology | None = None) -> None:
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
    from r1core.rollout.policy_sync import sync_policy_weights

    sync_policy_weights(policy, rollout)


def _cat_padded(rows: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate response-aligned ``[B_i, R_i]`` tensors, right-padding to the widest."""
    width = max(r.shape[1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1])) for r in rows])


def _concat(batches: list[SampleBatch]) -> SampleBatch:
    if len(batches) == 1:
        return batches[0]
    cat = lambda name: torch.cat([getattr(b, name) for b in batches])  # noqa: E731
    extras: dict[str, Any] = {"golds": [g for b in batches for g in b.extras["golds"]]}
    names = batches[0].extras.get("components", {}).keys()
    extras["components"] = {n: torch.cat([b.extras["components"][n] for b in batches]) for n in names}
    return SampleBatch(
        [p for b in batches for p in b.prompt_ids],
        [r for b in batches for r in b.response_ids],
        [lp for b in batches for lp in b.rollout_logp],
        cat("group_ids"), cat("rewards"), cat("truncated"),
        _cat_padded([b.advantages for b in batches]) if batches[0].advantages is not None else None,
        cat("loss_weights") if batches[0].loss_weights is not None else None, extras,
    )
