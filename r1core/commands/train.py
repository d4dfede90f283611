"""``r1core train``: the R1 pipeline, cold-start SFT, then GRPO, with held-out
evaluation before, during and after RL.

With no model configured (``policy.hf_dir`` empty) the run is the embedded default: it
builds a tokenizer and a small random-initialised Qwen2-style model, writes cold-start
traces in the R1 format for a synthetic verifiable task, fine-tunes on them, then trains
with GRPO on vLLM rollouts and rule-based rewards, entirely on CPU.

With a checkpoint (``policy.hf_dir``) the run trains it on the synthetic task or on dataset
files (``data.train_files``), prompted by the run's template (the tokenizer's chat template,
R1-Zero's, or raw); it is fine-tuned first only when asked (``sft.cold_start``). Prompts too
long for the budget are skipped and counted, and the engine's length is fitted to the
prompts and the response budget (:mod:`r1core.commands.prompting`).

Under torchrun (``WORLD_SIZE > 1``) the layout is checked and the process groups are made
before anything is built. Each data-parallel replica's leader owns a rollout engine (in its
own process, away from the trainer's process group) and a reward pool; every rank trains
on its replica's share of each step's groups; global rank 0 alone writes the tokenizer,
the logs, TensorBoard, the plot and the summary (see ``r1core/parallel/topology.py``).

This module is the composition root of a run: it alone reads the whole ``RunConfig`` and
hands each component its own section.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from r1core.algos.sampling import DifficultyFilter, PromptStream
from r1core.batch import Prompt, RolloutBatch
from r1core.commands.console import Progress
from r1core.commands.lifecycle import EXIT_STOPPED, StopRequested, active_control
from r1core.commands.prompting import length_plan, model_positions, prompting
from r1core.commands.sft import check_recompute, load_sft_examples
from r1core.config.loader import ConfigError, config_to_dict, dump_config
from r1core.config.run import RESUMABLE_KEYS, RunConfig, changed_for_resume
from r1core.data.config import DataConfig
from r1core.data.prompts import EncodedProblems, encode_problems
from r1core.data.records import DataFormatError
from r1core.data.sources import hold_out, load_sources
from r1core.data.synthetic.base import get_task, split_problems
from r1core.data.templates import ChatTemplate, build_template
from r1core.data.tokenizers import end_of_turn_id, load_tokenizer
from r1core.eval.evaluate import evaluate
from r1core.parallel.layout import resolve_layout
from r1core.parallel.topology import Topology, even_slices, without_torchrun_env
from r1core.rewards.extract import ANSWER_OPEN, final_or_last_number
from r1core.rollout.config import RolloutConfig
from r1core.trainer.checkpoint import CheckpointManager
from r1core.trainer.embedded import make_tiny_qwen2, train_tokenizer
from r1core.trainer.grpo import GRPOTrainer, sync_weights
from r1core.trainer.rng import restore_rng_state
from r1core.trainer.run_logger import NullLogger, RunLogger, atomic_write_text
from r1core.trainer.sft import num_sft_steps, run_sft

# Evaluation samples with its own seeds, away from the training steps' (see
# r1core.trainer.grpo.STEP_SEED_STRIDE): problem i of an evaluation draws with
# EVAL_SEED_OFFSET + run seed + i, the same at every evaluation, so the curves compare the
# policy on identical sampling noise.
EVAL_SEED_OFFSET = 10_000

log = logging.getLogger("r1core")


#: The panels of ``curves.png``: (metric, phase).
CURVE_PANELS = (("reward_mean", "train"), ("accuracy", "eval"), ("answer_marker_rate", "eval"),
                ("response_length_mean", "train"))


def _corrupt(answer: str, rng: random.Random) -> str:
    value = int(answer)
    return str(value + rng.choice([-3, -2, -1, 1, 2, 3]))


def cold_start_traces(task: Any, problems: Sequence[Any], noise: float, seed: int,
                      open_think: bool = False) -> list[tuple[str, str]]:
    """``(problem text, R1-format response)`` pairs; a ``noise`` share ends in a wrong answer.
    ``open_think``: the response opens its ``<think>`` itself (prompts that do not end
    with one)."""
    rng = random.Random(seed)
    out = []
    for problem in problems:
        trace = task.solution_trace(problem, open_think=open_think)
        if rng.random() < noise:
            head, _, _ = trace.rpartition(ANSWER_OPEN)
            trace = f"{head}{ANSWER_OPEN}{_corrupt(problem.answer, rng)}</answer>"
        out.append((problem.problem, trace))
    return out


class Pipeline:
    """Holds the pieces of one run and runs its phases in order."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.run.directory)
        self.topology = start_distributed(cfg)
        self.control = active_control()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.start = open_run_folder(cfg, self.topology)
        self.resume_step = self.start.resume_step
        if self.topology.is_main:
            self.logger = RunLogger(self.run_dir, tensorboard=cfg.logging.tensorboard, resume_from=self.resume_step,
                                    restart=self.start.restart, wandb=cfg.logging.wandb, run_name=cfg.run.name,
                                    run_config=config_to_dict(cfg))
        else:
            self.logger = NullLogger()
        self.progress = Progress(enabled=self.topology.is_main and cfg.logging.progress)
        self.progress.plan(*rl_progress_plan(cfg, self.resume_step))

    # --------------------------------------------------------------- phases

    def build_task(self) -> None:
        """The training and held-out problems: from ``data.train_files`` when given, else the
        synthetic task's."""
        section = self.cfg.data
        if section.train_files:
            self.task = None
            self.train_problems, self.eval_problems = load_training_data(section)
        else:
            self.task = get_task(section.task, difficulty=section.difficulty)
            if section.options:
                fields = {k: int(v) if isinstance(getattr(self.task.config, k, None), int) else v for k, v in section.options.items()}
                self.task = get_task(section.task, config=replace(self.task.config, **fields))
            self.train_problems, self.eval_problems = split_problems(
                self.task, section.num_train, section.num_eval, seed=section.seed
            )
        # The chat template needs the tokenizer; it is built with it in prepare_prompts.
        self.template = None if section.template == "chat" else build_template(section.template,
                                                                                 instruction=section.instruction)

    def build_model(self) -> Path:
        """The starting checkpoint: the configured one, or the embedded tokenizer + model."""
        if self.cfg.policy.hf_dir:
            self.tokenizer = load_tokenizer(self.cfg.policy.hf_dir)
            return Path(self.cfg.policy.hf_dir)
        init_dir = self.run_dir / "init"
        if self.topology.is_main:
            if self.template is None:
                raise ConfigError("the chat template needs a tokenizer with one; the embedded model's has none "
                                  "(set policy.hf_dir, or data.template=compact)", key="data.template")
            # The tokenizer learns the text it will see: prompts and the task's traces (or,
            # for dataset files, the gold answers).
            responses = ([self.task.solution_trace(p, open_think=False) for p in self.train_problems]
                         if self.task is not None else [p.answer for p in self.train_problems])
            corpus = [self.template(p.problem) + r for p, r in zip(self.train_problems, responses)]
            embedded = self.cfg.embedded
            self.tokenizer = train_tokenizer(corpus, self.run_dir / "tokenizer", vocab_size=embedded.vocab_size)
            init_dir = make_tiny_qwen2(init_dir, self.tokenizer, embedded.model)
        # One rank builds the tokenizer and the model; the others read what it wrote.
        self.topology.barrier()
        if not self.topology.is_main:
            self.tokenizer = load_tokenizer(init_dir)
        return init_dir

    def prepare_prompts(self, start_dir: Path) -> None:
        """Template, stop tokens and decoder for the tokenizer; every problem rendered and
        tokenised; the prompt budget and engine length planned (``rollout.max_model_len``
        raised when the prompts and the response budget need more, the model's positions
        the cap); over-long prompts skipped and counted; the RL step count fixed
        (``data.epochs``)."""
        cfg = self.cfg
        self.prompting = prompting(cfg.data, self.tokenizer, start_dir)
        self.template = self.prompting.template
        train = encode_problems(self.train_problems, self.template, self.tokenizer)
        held = encode_problems(self.eval_problems, self.template, self.tokenizer)
        plan = length_plan(cfg.data, cfg.rollout.max_model_len, start_dir, longest_prompt=max(train.longest, held.longest),
                           response_budget=max(cfg.trainer.max_response_tokens, cfg.eval.max_tokens))
        self.max_model_len = plan.max_model_len
        self.train_encoded, skipped_train = train.within(plan.prompt_budget)
        self.eval_encoded, skipped_eval = held.within(plan.prompt_budget)
        if not len(self.train_encoded):
            raise DataFormatError(", ".join(cfg.data.train_files) or cfg.data.task, None,
                                  f"every training prompt is longer than {plan.prompt_budget} tokens")
        notes = [plan.note] if plan.note else []
        if skipped_train or skipped_eval:
            notes.append(f"skipped prompts longer than {plan.prompt_budget} tokens: {skipped_train} of {len(train)} "
                         f"training, {skipped_eval} of {len(held)} held-out")
        for note in notes:
            self.progress.note("data: %s", note)
        if self.resume_step is None:  # a resumed run logged these when it started
            self.logger.log(0, {"train_problems": len(self.train_encoded), "train_skipped_too_long": skipped_train,
                                "eval_problems": len(self.eval_encoded), "eval_skipped_too_long": skipped_eval,
                                "prompt_budget": plan.prompt_budget, "max_model_len": plan.max_model_len},
                            phase="data")
        steps = rl_steps(cfg, len(self.train_encoded))
        if steps != cfg.trainer.steps:
            self.progress.note("data: data.epochs=%s over %d problems: %d RL steps", cfg.data.epochs,
                               len(self.train_encoded), steps)
            self.cfg = replace(cfg, trainer=replace(cfg.trainer, steps=steps))
            self.progress.plan(*rl_progress_plan(self.cfg, self.resume_step))

    def encode_prompts(self, encoded: EncodedProblems) -> list[Prompt]:
        """Training prompts; a problem's uid is its position, or its id for dataset files
        (stable across runs that filter differently)."""
        by_id = bool(self.cfg.data.train_files)
        return [Prompt(tokens, p.answer, p.id if by_id else i)
                for i, (p, tokens) in enumerate(zip(encoded.problems, encoded.tokens))]

    def decode(self, ids: list[int]) -> str:
        return self.prompting.decode(ids)

    def build_policy(self, hf_dir: Path, lr: float, total_steps: int = 0):
        from r1core.models import build_policy

        policy = self.cfg.policy
        check_recompute(policy.recompute)
        return build_policy(hf_dir, self.cfg.parallel, dtype=policy.torch_dtype(), optim=policy.optim(lr, total_steps),
                            seed=self.cfg.run.seed, recompute=policy.recompute)

    def cold_start_examples(self, start_dir: Path, kind: str) -> list[tuple[list[int], list[int]]]:
        """The cold start's ``(prompt ids, response ids)``: the synthetic task's traces, or
        ``sft.traces``."""
        if kind == "traces":
            return load_sft_examples(self.cfg.sft.traces, self.tokenizer, self.prompting,
                                     max_tokens=model_positions(start_dir),
                                     log=lambda message: self.progress.note("sft: %s", message))
        chat = isinstance(self.template, ChatTemplate)
        # The compact template ends the prompt with <think>; every other one leaves it to
        # the response.
        traces = cold_start_traces(self.task, self.train_problems, self.cfg.sft.trace_noise, self.cfg.run.seed,
                                   open_think=self.cfg.data.template != "compact")
        end = (end_of_turn_id(self.tokenizer) if chat else None) or self.tokenizer.eos_token_id
        return [(self.tokenizer.encode(self.template(q), add_special_tokens=not chat),
                 self.tokenizer.encode(r, add_special_tokens=False) + [end]) for q, r in traces]

    def cold_start(self, start_dir: Path) -> Path:
        section = self.cfg.sft
        kind = cold_start_kind(self.cfg)
        if section.epochs <= 0 or kind == "none":
            return start_dir
        examples = self.cold_start_examples(start_dir, kind)
        steps = num_sft_steps(section, len(examples))
        policy = self.build_policy(start_dir, section.lr, steps)
        self.progress.plan(self.progress.total + steps, self.progress.done)

        def on_step(step: int, metrics: dict[str, float]) -> None:
            self.logger.log(step, metrics, phase="sft")
            self.progress.advance(1, f"cold start {step + 1}/{steps}: nll {metrics['loss']:.3f}")
            self.check_stop()

        run_sft(policy, examples, section, on_step=on_step, topology=self.topology)
        out = self.run_dir / "sft"
        policy.export_hf(out)
        if self.topology.is_main:
            self.tokenizer.save_pretrained(out)
        self.topology.barrier()  # the checkpoint is complete before any engine reads it
        return out

    # --------------------------------------------------------------- evaluation

    def evaluate(self, rollout: Any, step: int) -> float:
        """avg@k accuracy on the held-out problems (R1's pass@1 from k samples); logged."""
        section = self.cfg.eval
        topology = self.topology
        if not len(self.eval_encoded):
            return float("nan")  # no held-out problems (data.num_eval=0)
        prompts = self.encode_prompts(self.eval_encoded)
        # Each replica's leader samples its contiguous share of the problems (per-problem
        # seeds as in one process); global rank 0 grades the gathered responses and every
        # rank gets the same accuracy.
        share = even_slices(len(prompts), topology.dp_size)[topology.dp_rank]
        local = None
        if topology.is_leader:
            groups = rollout.generate(
                [p.tokens for p in prompts[share]], n=section.k, max_tokens=section.max_tokens,
                temperature=section.temperature, top_p=section.top_p, stop=self.prompting.stop_ids,
                seed=EVAL_SEED_OFFSET + self.cfg.run.seed + share.start,
            )
            local = (topology.dp_rank, [[(self.decode(s.token_ids), len(s.token_ids)) for s in g] for g in groups])
        parts = sorted(part for part in topology.all_gather(local) if part is not None)
        metrics = None
        if topology.is_main:
            samples = [group for _, groups in parts for group in groups]
            responses = [[text for text, _ in group] for group in samples]
            report = evaluate(self.eval_encoded.problems, responses, self.grade, ks=sorted({1, section.k}),
                              extract_fn=final_or_last_number)
            metrics = {key: float(value) for key, value in report.items() if isinstance(value, (int, float))}
            metrics["accuracy"] = metrics[f"avg@{section.k}"]
            lengths = [length for group in samples for _, length in group]
            metrics["response_length_mean"] = sum(lengths) / len(lengths)
            self.logger.log(step, metrics, phase="eval")
            self.progress.note("eval at step %d: accuracy %.3f (avg@%d)", step, metrics["accuracy"], section.k)
        self.progress.advance(1, f"eval at step {step}")
        return float(topology.broadcast_from_main(metrics)["accuracy"])

    def grade(self, responses: list[str], golds: list[str]) -> list[float]:
        return self.pool.score(self.accuracy_reward, responses, golds).scores

    # --------------------------------------------------------------- RL

    def prompt_stream(self) -> PromptStream:
        """The training prompts in a seeded, resumable order, with the algorithm's online
        difficulty filter and curriculum when they are on."""
        difficulty = self.cfg.algorithm.difficulty
        band = DifficultyFilter(difficulty.min_pass_rate, difficulty.max_pass_rate) if difficulty.filter else None
        return PromptStream(
            self.encode_prompts(self.train_encoded), seed=self.cfg.run.seed, id_of=lambda p: p.uid,
            tracker=difficulty.tracker() if difficulty.enabled else None, difficulty_filter=band,
            curriculum=difficulty.curriculum, num_buckets=difficulty.num_buckets,
        )

    def reinforce(self, start_dir: Path) -> dict[str, Any]:
        from r1core.rewards import RewardPool, RewardPoolConfig, compose_rewards, get_reward

        cfg = self.cfg
        topology = self.topology
        rollout_cfg = cfg.rollout
        if rollout_cfg.dtype == "auto":
            # vLLM's "auto" runs float32 checkpoints in half precision; sample with the
            # policy's own dtype so rollout and trainer log-probs agree.
            rollout_cfg = replace(rollout_cfg, dtype=str(cfg.policy.torch_dtype()).removeprefix("torch."))
        rollout_cfg = replace(rollout_cfg, max_model_len=self.max_model_len)
        rollout = None
        self.pool = None
        # The engine and the reward workers end with this phase however it ends (a stop
        # signal, an interrupt, an error): nothing is left holding memory or a GPU.
        try:
            if topology.is_leader:
                rollout = build_rollout(start_dir, rollout_cfg, topology)
            optimizer_steps = cfg.trainer.steps * cfg.trainer.epochs_per_step * cfg.trainer.mini_batches
            policy = self.build_policy(start_dir, cfg.policy.lr, optimizer_steps)
            ref_policy = self.build_policy(start_dir, cfg.policy.lr) if cfg.algorithm.needs_reference else None
            reward_cfg = cfg.reward
            configs = {name: dict(fields) for name, fields in reward_cfg.configs.items()}
            if "r1_format" in reward_cfg.weights:
                # The compact template's prompt ends with <think>; the response starts after it.
                configs.setdefault("r1_format", {"allow_missing_think_open": True})
            composite = compose_rewards(reward_cfg.weights, configs=configs)
            timeouts = [c.reward.time_budget(reward_cfg.sample_timeout_s) for c in composite.components]
            self.accuracy_reward = get_reward("math_accuracy")
            # Rewards are scored where the samples are: on the leaders.
            if topology.is_leader:
                self.pool = RewardPool(RewardPoolConfig(num_workers=reward_cfg.num_workers,
                                                        sample_timeout_s=reward_cfg.sample_timeout_s))

            def score(responses: list[str], golds: list[str]):
                result = self.pool.score_composite(composite, responses, golds, sample_timeout_s=timeouts)
                failed = sum(r is not None for reasons in result.reasons.values() for r in reasons)
                return result.totals, result.components, failed

            trainer = GRPOTrainer(cfg.trainer, cfg.algorithm, policy, rollout, self.prompt_stream(), self.decode,
                                  score, ref_policy=ref_policy, topology=topology, stop=self.prompting.stop_ids)
            return self.train_steps(trainer, policy, rollout)
        finally:
            if self.pool is not None:
                self.pool.close()
            if rollout is not None:
                rollout.close()

    def train_steps(self, trainer: GRPOTrainer, policy: Any, rollout: Any) -> dict[str, Any]:
        """The RL steps from the start (or the checkpoint) to ``trainer.steps``, with their
        evaluations and checkpoints; stops at a step boundary when a stop signal arrives."""
        cfg = self.cfg
        topology = self.topology
        checkpoints = CheckpointManager(cfg.checkpoint_directory, keep_last=cfg.checkpoint.keep_last)
        config_yaml = dump_config(cfg)
        summary: dict[str, Any] = {}
        if self.resume_step is not None:
            latest = checkpoints.load(self.resume_step)
            policy.load_state_dict(latest.state["policy"])
            trainer.load_state_dict(latest.state["trainer"])
            summary = dict(latest.state["summary"])
            restore_rng_state(latest.state["rng"])
            sync_weights(policy, rollout, topology)
            self.progress.note("resumed from step %d (%s)", trainer.step_index, latest.path)
        else:
            summary["accuracy_start"] = self.evaluate(rollout, 0)
            if self.control.stop_requested(topology):
                # A checkpoint at step 0 keeps the cold start and the first evaluation.
                path = checkpoints.save(0, {"policy": policy.state_dict(), "trainer": trainer.state_dict(),
                                            "summary": summary}, config_yaml=config_yaml)
                raise StopRequested(self.control.signal_name or "a stop signal", str(path))

        rollouts_path = self.run_dir / "rollouts" / f"rank_{topology.world_rank:05d}.jsonl"
        if cfg.logging.rollouts and topology.is_leader:
            # Samples of steps after the checkpoint belong to the interrupted attempt and are
            # drawn again (as metrics.jsonl drops its records of those steps).
            trim_rollouts(rollouts_path, trainer.step_index)
        total_tokens = summary.get("train_tokens", 0.0)
        while trainer.step_index < cfg.trainer.steps:
            result = trainer.step()
            step = trainer.step_index
            if cfg.logging.rollouts and topology.is_leader:
                write_rollouts(rollouts_path, step, result.batch)
            total_tokens += result.metrics["train_tokens"]
            self.logger.log(step, result.metrics)
            m = result.metrics
            self.progress.advance(1, f"rl step {step}/{cfg.trainer.steps}: reward {m['reward_mean']:.3f}, "
                                     f"length {m['response_length_mean']:.1f}, {m['tokens_per_second']:.0f} tok/s")
            if step % cfg.eval.every == 0 or step == cfg.trainer.steps:
                summary["accuracy_end"] = self.evaluate(rollout, step)
            self.export_every(policy, step)
            summary["train_tokens"] = total_tokens
            stopping = self.control.stop_requested(topology) and step < cfg.trainer.steps
            interval = cfg.checkpoint.interval
            if (interval and step % interval == 0) or step == cfg.trainer.steps or stopping:
                path = checkpoints.save(step, {"policy": policy.state_dict(), "trainer": trainer.state_dict(),
                                               "summary": summary}, config_yaml=config_yaml)
                if stopping:
                    raise StopRequested(self.control.signal_name or "a stop signal", str(path))
        summary["steps"] = trainer.step_index
        policy.export_hf(self.run_dir / "final")
        if topology.is_main:
            self.tokenizer.save_pretrained(self.run_dir / "final")
        return summary

    def check_stop(self) -> None:
        """At a point with nothing to checkpoint (model building, the cold start, the first
        evaluation): raise :class:`StopRequested` when a stop signal has arrived on any rank."""
        if self.control.stop_requested(self.topology):
            raise StopRequested(self.control.signal_name or "a stop signal")

    def export_every(self, policy: Any, step: int) -> None:
        """``policy.export_every``: a Hugging Face checkpoint of the policy after RL step
        ``step`` in ``<run dir>/hf/step_<step>`` (collective: every rank calls it)."""
        every = self.cfg.policy.export_every
        if every <= 0 or step % every or step == self.cfg.trainer.steps:
            return  # the last step's weights are written to final/
        out = self.run_dir / "hf" / f"step_{step:06d}"
        policy.export_hf(out)
        if self.topology.is_main:
            self.tokenizer.save_pretrained(out)

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        self.topology.barrier()  # every rank is done (final export included) before the summary
        rl_seconds = sum(r.get("step_s", 0.0) for r in self.logger.history if r["phase"] == "train")
        summary.update(
            {
                "attempts": len(getattr(self.logger, "attempts", [])) or 1,
                "tokens_per_second": summary.get("train_tokens", 0.0) / rl_seconds if rl_seconds else 0.0,
                "accuracy_gain": summary.get("accuracy_end", float("nan")) - summary.get("accuracy_start", float("nan")),
                "run_dir": str(self.run_dir),
            }
        )
        self.logger.plot(self.run_dir / "curves.png", CURVE_PANELS)
        # Every attempt's time (a resumed run counts the time its earlier attempts ran), the
        # same figure as the sum of attempts.json.
        summary["wall_seconds"] = self.logger.end_attempt("finished")
        self.logger.write_summary(summary)
        self.logger.close()
        return summary


def load_training_data(section: DataConfig) -> tuple[list[Any], list[Any]]:
    """Training and held-out problems from ``data.train_files`` and ``data.eval_files``, or,
    without evaluation files, ``data.num_eval`` problems held out of the training ones."""
    train = load_sources(section.train_files, fields=section.fields, answer_format=section.answer_format,
                         default_split="train")
    if section.eval_files:
        held = load_sources(section.eval_files, fields=section.fields, answer_format=section.answer_format,
                            default_split="test")
        return train, held
    return hold_out(train, section.num_eval, seed=section.seed)


def cold_start_kind(cfg: RunConfig) -> str:
    """``sft.cold_start`` resolved: ``auto`` is ``traces`` with ``sft.traces``, ``synthetic``
    for the embedded model on the synthetic task, else ``none``. Raises :class:`ConfigError`
    for synthetic traces without a synthetic task."""
    kind = cfg.sft.cold_start
    if kind == "auto":
        if cfg.sft.traces:
            return "traces"
        return "synthetic" if not cfg.policy.hf_dir and not cfg.data.train_files else "none"
    if kind == "synthetic" and cfg.data.train_files:
        raise ConfigError("sft.cold_start=synthetic needs the synthetic task (data.train_files is set); give "
                          "sft.traces instead", key="sft.cold_start")
    return kind


def rl_steps(cfg: RunConfig, num_problems: int) -> int:
    """RL steps of the run: ``ceil(data.epochs * problems / trainer.prompts_per_step)`` when
    ``data.epochs`` > 0, else ``trainer.steps``."""
    if cfg.data.epochs <= 0:
        return cfg.trainer.steps
    return max(1, math.ceil(cfg.data.epochs * num_problems / cfg.trainer.prompts_per_step))


def write_rollouts(path: Path, step: int, batch: RolloutBatch) -> None:
    """Append one JSON line per sample of ``batch`` for ``step``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        for row in range(len(batch)):
            group = batch.row_group(row)
            record = {
                "step": step, "group": int(batch.group_index[group]), "prompt_ids": batch.prompt_tokens[group],
                "response_ids": batch.response_tokens[row], "reward": float(batch.rewards[row]),
            }
            handle.write(json.dumps(record) + "\n")


def trim_rollouts(path: Path, last_step: int) -> None:
    """Drop the records of steps after ``last_step`` from a rollouts file (atomically)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            if number == len(lines) and not line.endswith("\n"):  # cut short by a kill: drawn again
                continue
            raise
        if step <= last_step:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(kept))


def start_distributed(cfg: RunConfig) -> Topology:
    """Under torchrun: check the layout and the batch split, create the process groups and
    return this rank's :class:`Topology`; in one process: ``Topology()`` and nothing else
    (the policy makes its one-rank group itself).

    Raises (before any work): ``LayoutError`` for a layout that does not fit the world, and
    ``ConfigError`` when ``trainer.prompts_per_step`` or ``sft.batch_size`` is not divisible
    by the data-parallel size.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Topology()
    from r1core.parallel.groups import init_distributed

    layout = resolve_layout(cfg.parallel, world_size)
    cfg.check_batch_split(layout.data)
    init_distributed(cfg.parallel, seed=cfg.run.seed)
    return Topology.from_parallel_state()


def build_rollout(start_dir: Path, rollout_cfg: RolloutConfig, topology: Topology) -> Any:
    """This replica's vLLM engine (call on its leader only).

    Under torchrun the engine runs in its own process, started without torchrun's
    environment: vLLM in-process would set up its parallel state inside the trainer's
    initialised process group, and a spawned engine that inherits ``RANK``/``MASTER_*``
    would try to join it."""
    from r1core.rollout import VLLMRollout

    if not topology.distributed:
        return VLLMRollout(start_dir, config=rollout_cfg)
    if rollout_cfg.engine_mode != "own_process":
        rollout_cfg = replace(rollout_cfg, engine_mode="own_process")
    with without_torchrun_env():
        return VLLMRollout(start_dir, config=rollout_cfg)


def run(cfg: RunConfig) -> int:
    """``r1core train``: the whole pipeline for the run configuration ``cfg``.

    Returns 0, or ``EXIT_STOPPED`` (75) when a stop signal ended the run at a step boundary
    (after saving a checkpoint once there is a policy to save)."""
    pipeline = Pipeline(cfg)
    status = "failed"
    try:
        pipeline.build_task()
        sft_dir = pipeline.run_dir / "sft"
        if pipeline.resume_step is not None and (sft_dir / "config.json").is_file():
            # The cold start finished before the interruption: continue from its checkpoint.
            pipeline.tokenizer = load_tokenizer(sft_dir)
            start = sft_dir
            pipeline.prepare_prompts(start)
        else:
            start = pipeline.build_model()
            pipeline.prepare_prompts(start)
            pipeline.check_stop()
            start = pipeline.cold_start(start)
        summary = pipeline.reinforce(start)
        summary = pipeline.finish(summary)
        status = "finished"
    except StopRequested as stop:
        status = "stopped"
        pipeline.progress.close()
        pipeline.logger.close(status)
        if pipeline.topology.is_main:
            advice = ("continue with --resume" if stop.checkpoint else
                      "nothing was saved; --resume-or-start starts over")
            print(f"r1core train: {stop}; {advice}", file=sys.stderr)
        _end_distributed(pipeline.topology)
        return EXIT_STOPPED
    finally:
        pipeline.progress.close()
        if status == "failed":
            pipeline.logger.close("failed")
    if pipeline.topology.is_main:
        print(json.dumps({k: summary[k] for k in ("accuracy_start", "accuracy_end", "steps", "wall_seconds",
                                                    "tokens_per_second") if k in summary}, indent=2))
    _end_distributed(pipeline.topology)
    return 0


def _end_distributed(topology: Topology) -> None:
    if topology.distributed:
        from r1core.parallel.groups import destroy_distributed

        destroy_distributed()


# ---------------------------------------------------------------------- starting or resuming


@dataclass
class RunStart:
    """How this attempt begins: from a checkpoint's step, from the beginning in a fresh
    folder, or from the beginning over an earlier attempt that saved nothing (``restart``)."""

    resume_step: Optional[int] = None
    restart: bool = False


def open_run_folder(cfg: RunConfig, topology: Topology) -> RunStart:
    """Decide how this attempt starts, before anything is built; collective (every rank
    looks at the same folder and checkpoints, before any rank writes).

    A plain run refuses a folder that already holds one. A resume takes the newest intact
    checkpoint (a damaged newer one is reported and passed over), refuses a configuration
    whose model, data or algorithm keys differ from the checkpoint's (naming them), and
    refuses a folder without a checkpoint unless ``checkpoint.start_if_none``.

    Raises:
        FileExistsError: a plain run in a folder that holds a run.
        ConfigError: a resume that cannot continue (no intact checkpoint, changed keys,
            ``trainer.steps`` below the checkpoint's step).
    """
    run_dir = Path(cfg.run.directory)
    section = cfg.checkpoint
    held = (run_dir / "metrics.jsonl").exists()
    if not section.resume:
        if held:
            # Never mix two runs' logs and checkpoints, and never overwrite a finished run.
            raise FileExistsError(
                f"{run_dir} already holds a run: pass --resume to continue it (--resume-or-start if it saved "
                f"no checkpoint yet), or choose another run.name (or delete the folder) to start a new one")
        topology.barrier()
        return RunStart()
    manager = CheckpointManager(cfg.checkpoint_directory, keep_last=section.keep_last)
    step, damaged = manager.newest_intact_step()
    for bad_step, reason in damaged:
        log.warning("checkpoint step %d is damaged and is passed over: %s", bad_step, reason)
    if step is None:
        if damaged:
            raise ConfigError(f"checkpoint.resume: no intact checkpoint in {manager.directory} (every one is "
                              f"damaged: {'; '.join(reason for _, reason in damaged)})", key="checkpoint.resume")
        if not section.start_if_none:
            raise ConfigError(f"checkpoint.resume: no checkpoint in {manager.directory} to resume from; "
                              "--resume-or-start (checkpoint.start_if_none=true) starts from the beginning "
                              "instead", key="checkpoint.resume")
        if held:
            log.warning("%s holds an earlier attempt that saved no checkpoint: starting over", run_dir)
        topology.barrier()
        return RunStart(restart=held)
    saved_yaml = manager.load_config_yaml(step)
    if saved_yaml is not None:
        import yaml

        changed = changed_for_resume(yaml.safe_load(saved_yaml) or {}, config_to_dict(cfg))
        if changed:
            raise ConfigError(
                f"checkpoint.resume: the configuration differs from checkpoint step {step}'s in keys that change the "
                f"model, data or algorithm: {', '.join(changed)}; resume with the saved values, or start a new run "
                f"(another run.name). Keys a resume may change: {', '.join(RESUMABLE_KEYS)}", key="checkpoint.resume")
    if cfg.trainer.steps < step:
        raise ConfigError(f"trainer.steps={cfg.trainer.steps} is below the checkpoint's step {step}",
                          key="trainer.steps")
    if damaged:
        log.warning("resuming from step %d, the newest intact checkpoint", step)
    topology.barrier()
    return RunStart(resume_step=step)


def rl_progress_plan(cfg: RunConfig, resume_step: Optional[int]) -> tuple[int, int]:
    """``(total, done)`` of the progress bar in steps before the cold start adds its own:
    the RL steps and the evaluations (before the first step, every ``eval.every`` steps and
    after the last), those up to ``resume_step`` already done."""
    steps = cfg.trainer.steps
    evals = [0] + [step for step in range(1, steps + 1) if step % cfg.eval.every == 0 or step == steps]
    if resume_step is None:
        return steps + len(evals), 0
    return steps + len(evals), resume_step + sum(step <= resume_step for step in evals)
