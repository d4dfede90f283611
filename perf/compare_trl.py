"""End-to-end GRPO on CPU: r1core against TRL's ``GRPOTrainer``, side by side.

Both trainers start from the same cold-started checkpoint (the embedded tiny Qwen2 and its
BPE tokenizer after r1core's cold-start SFT), train on the same synthetic arithmetic
problems with the same prompt strings (``compact`` template), the same reward
(``math_accuracy + 0.1 * r1_format`` from ``r1core.rewards``), the same step shape (prompts
per step x group size, one optimiser step per batch, fully on-policy), the same generation
budget, learning rate, clipping (0.2 / 0.28), DAPO token-level loss aggregation and no KL.

What differs is the engine, which is what is being compared:

- r1core generates with vLLM (CPU backend) and trains its own policy; it runs as
  ``r1core train`` in a subprocess, exactly as a user would run it.
- TRL generates with ``transformers``' ``generate``: its vLLM integration needs CUDA, so on
  CPU ``use_vllm=False`` is the only choice.

Training tokens are counted the same way for both: the prompt plus completion tokens of
every sample of a step (r1core's ``train_tokens``; for TRL, the prompt token ids plus the
``completion_ids`` its reward function receives). Step time is the wall time of the whole
step (generation, reward, update, weight sync), from r1core's ``step_s`` and from a
``TrainerCallback`` around TRL's optimiser steps.

Three workloads (``--preset``): ``embedded``, the embedded run's ~1M-parameter model on
3-operand sums, where a step is a few milliseconds of compute per phase and the fixed cost
of each engine's steps decides; ``mixed``, a 24M-parameter model of the same
architecture on problems of 2 to 10 operands with a 256-token budget, where a step is
compute and the spread of response lengths decides how much of it goes to padding (TRL's
``generate`` runs every row until the longest sample ends and its update pads every row to
it; vLLM retires a sample when it ends and r1core's update packs the samples); and
``smollm2``, the real pretrained SmolLM2-135M-Instruct (``make smollm2``) with no cold start,
prompted through its own chat template to solve the arithmetic problems and box the answer,
rewarded by ``math_accuracy + 0.2 * answer_marker`` as in ``examples/smollm2_arithmetic_grpo.yaml``.

Run from the repository root::

    python -m perf.compare_trl                    # embedded: 8 steps x 8 prompts x 8, <= 48 tokens
    python -m perf.compare_trl --preset mixed     # mixed:    6 steps x 8 prompts x 8, <= 256 tokens
    python -m perf.compare_trl --preset smollm2   # SmolLM2-135M-Instruct: 3 steps x 4 prompts x 4, <= 128 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from perf.harness import Result, write_results

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_INSTRUCTION = "Put your final answer within \\boxed{}."


CAVEATS = """## How to read this

- Step time is the whole GRPO step: generation, reward, update and weight sync. TRL
  generates with transformers' `generate` (its vLLM paths need CUDA, so `use_vllm=False`
  is the only CPU option); r1core generates with vLLM's CPU backend. The generation engine
  is part of what is compared.
- Per step, the generation time of each side is measured alone (r1core's `generate_s`; for
  TRL, around the model's `generate`); the rest of a step is the reward, the update and,
  for r1core, the weight sync. "longest/mean" is the longest response of a step over the
  step's mean response, averaged over steps: the share of padded work TRL's `generate`
  and padded update do.
- The first step of each side carries start-up work (first-call allocations, oneDNN
  prepacking); the ratio is given over all steps, over steps 2..N, and for the fastest
  step of each side (other processes on a shared machine only slow steps down, so the
  fastest step is the least disturbed figure).
- Same start checkpoint, problems, prompt strings, reward, step shape, learning rate,
  clipping, loss aggregation, no KL, fp32. Different: the order in which problems are
  drawn (each trainer's own sampler and seed) and the sampling RNG, so the rewards of a
  few steps differ by chance as well as by method; with 8 steps the reward columns show
  that both trainers run the same task, not which one learns faster.
- The machine is a shared 2-core CPU; the load averages at start and end are recorded
  above. Numbers from a loaded machine are noisy; compare ratios from one invocation only.
"""


#: Workloads: each fills the flags left unset on the command line.
PRESETS: dict[str, dict[str, Any]] = {
    # The embedded run's model (~1M parameters) and task (3-operand sums, answers of ~22
    # tokens, all about as long): a step is a few milliseconds of compute per phase, so it
    # measures the fixed cost of each engine's steps.
    "embedded": {"steps": 8, "max_tokens": 48, "sft_epochs": 20.0},
    # A 24M-parameter Qwen2 shape on problems of 2 to 10 operands, whose worked solutions
    # run from ~15 to ~150 tokens (a spread like a real math set's), 256-token budget: a
    # step is compute, and how much of it goes to padding decides the result.
    "mixed": {"steps": 6, "max_tokens": 256, "sft_epochs": 3.0, "num_terms": 2.0, "max_terms": 10,
              "hidden_size": 512, "num_layers": 8, "intermediate_size": 1536, "num_heads": 8},
    # The real SmolLM2-135M-Instruct as it ships (no cold start), the 3-operand problems in its
    # chat template with an instruction to box the answer; responses run to the budget.
    "smollm2": {"steps": 3, "prompts": 4, "group": 4, "max_tokens": 128, "sft_epochs": 0.0,
                "model": "smollm2", "template": "chat", "instruction": SMOLLM2_INSTRUCTION, "temperature": 0.7,
                # r1_format at weight 0 (a chat model answers without R1 tags): the configuration
                # merges over the default weights, so the key must be given to be zeroed.
                "reward": {"math_accuracy": 1.0, "answer_marker": 0.2, "r1_format": 0.0}},
}

#: What every preset leaves as it is unless it says otherwise.
PRESET_DEFAULTS: dict[str, Any] = {"prompts": 8, "group": 8, "temperature": 1.0, "model": "embedded", "template": "compact",
                                   "instruction": "", "reward": {"math_accuracy": 1.0, "r1_format": 0.1}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="embedded",
                        help="workload whose settings fill the flags not given (see PRESETS)")
    parser.add_argument("--steps", type=int, default=None, help="GRPO optimiser steps for each trainer")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per step (default 8)")
    parser.add_argument("--group", type=int, default=None, help="samples per prompt (group size, default 8)")
    parser.add_argument("--max-tokens", type=int, default=None, help="maximum completion tokens")
    parser.add_argument("--lr", type=float, default=2e-4, help="learning rate of both trainers")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature of both trainers "
                        "(default 1.0)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/compare_trl"),
                        help="folder for the cold start and both runs (a fresh one is made per invocation)")
    parser.add_argument("--start-dir", type=Path, default=None,
                        help="an existing cold-started HF checkpoint (with tokenizer) to reuse; with --preset smollm2, "
                             "the converted SmolLM2 checkpoint (default: where make smollm2 puts it)")
    parser.add_argument("--num-terms", type=float, default=None,
                        help="arithmetic operands per problem (default: the run configuration's, 3)")
    parser.add_argument("--max-terms", type=int, default=None,
                        help="draw the operand count uniformly from --num-terms..--max-terms: problems of mixed "
                             "size, whose solutions (and so response lengths) spread as a real benchmark's do")
    parser.add_argument("--hidden-size", type=int, default=None, help="model width (default: the embedded model's)")
    parser.add_argument("--num-layers", type=int, default=None, help="decoder layers (default: the embedded model's)")
    parser.add_argument("--intermediate-size", type=int, default=None, help="SwiGLU width (default: the embedded model's)")
    parser.add_argument("--num-heads", type=int, default=None, help="query heads (default: the embedded model's)")
    parser.add_argument("--sft-epochs", type=float, default=None, help="cold-start SFT epochs when preparing")
    parser.add_argument("--trl-generation", choices=("generate", "continuous_batching"), default="generate",
                        help="TRL's CPU generation path: transformers generate, or transformers' continuous batching "
                             "(use_transformers_continuous_batching)")
    parser.add_argument("--skip-trl", action="store_true", help="run only the r1core side")
    parser.add_argument("--skip-r1core", action="store_true", help="run only the TRL side")
    parser.add_argument("--no-write", action="store_true", help="print, do not write perf/results")
    args = parser.parse_args(argv)
    for name, value in {**PRESET_DEFAULTS, **PRESETS[args.preset]}.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.model == "smollm2" and args.start_dir is None:
        from r1core.data.fetch_smollm2 import find_checkpoint

        args.start_dir = find_checkpoint()
        if args.start_dir is None:
            parser.error("--preset smollm2 needs the converted SmolLM2 checkpoint: run `make smollm2` "
                         "(or pass --start-dir)")
    for name in ("steps", "prompts", "group", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.group < 2:
        parser.error("--group must be >= 2: GRPO's baseline is the group mean")
    if args.start_dir is not None and not (args.start_dir / "config.json").is_file():
        parser.error(f"--start-dir {args.start_dir} is not a Hugging Face checkpoint (no config.json)")
    return args


def throughput(train_tokens: list[float], step_seconds: list[float], skip_first: bool = False) -> float:
    """Training tokens per second over the steps: sum(tokens) / sum(seconds).

    ``skip_first`` leaves out the first step (start-up work such as first-call allocation).
    """
    if len(train_tokens) != len(step_seconds) or not train_tokens:
        raise ValueError(f"need equal, non-empty token and time lists, got {len(train_tokens)} and {len(step_seconds)}")
    if skip_first and len(train_tokens) > 1:
        train_tokens, step_seconds = train_tokens[1:], step_seconds[1:]
    return float(sum(train_tokens)) / float(sum(step_seconds))


def sample_tokens(prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> int:
    """Prompt plus completion tokens of a batch of samples (r1core's ``train_tokens``)."""
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(completion_ids)} completions")
    return sum(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))


def run_config_overrides(args: argparse.Namespace) -> list[str]:
    """Data and reward settings shared by the cold start and the r1core run (the defaults)."""
    overrides = [f"run.seed={args.seed}"]
    if args.num_terms is not None:
        overrides.append(f"data.options.num_terms={args.num_terms}")
    if args.max_terms is not None:
        overrides.append(f"data.options.max_terms={args.max_terms}")
    if args.template != "compact":
        overrides.append(f"data.template={args.template}")
    if args.instruction:
        overrides.append(f"data.instruction='{args.instruction}'")
    return overrides


def reward_overrides(args: argparse.Namespace) -> list[str]:
    """The preset's reward weights for the r1core run."""
    weights = ", ".join(f"{name}: {weight}" for name, weight in args.reward.items())
    return [f"reward.weights={{{weights}}}"]


def model_overrides(args: argparse.Namespace) -> list[str]:
    """The model shape given on the command line, as overrides of the embedded model."""
    fields = {"hidden_size": args.hidden_size, "num_layers": args.num_layers,
              "intermediate_size": args.intermediate_size, "num_attention_heads": args.num_heads}
    return [f"embedded.model.{k}={v}" for k, v in fields.items() if v is not None]


# ----------------------------------------------------------------------------- cold start

def prepare_start(args: argparse.Namespace, work: Path) -> Path:
    """Cold-start SFT with r1core's pipeline; returns the HF checkpoint both trainers load."""
    from r1core.config.loader import load_config
    from r1core.config.run import RunConfig
    from r1core.commands.train import Pipeline

    cfg = load_config(RunConfig, None, run_config_overrides(args) + model_overrides(args) + [
        f"run.output_root={work}", "run.name=coldstart", f"sft.epochs={args.sft_epochs}", "logging.tensorboard=false",
    ])
    pipeline = Pipeline(cfg)
    pipeline.build_task()
    init = pipeline.build_model()
    pipeline.prepare_prompts(init, lambda message: None)
    return pipeline.cold_start(init, lambda message: None)


def training_task(args: argparse.Namespace) -> tuple[Any, Any]:
    """The run configuration's synthetic task (with its ``data.options``) and data section."""
    from r1core.config.loader import load_config
    from r1core.config.run import RunConfig
    from r1core.data.synthetic.base import get_task
    from dataclasses import replace

    section = load_config(RunConfig, None, run_config_overrides(args)).data
    task = get_task(section.task, difficulty=section.difficulty)
    if section.options:
        fields = {k: int(v) if isinstance(getattr(task.config, k, None), int) else v for k, v in section.options.items()}
        task = get_task(section.task, config=replace(task.config, **fields))
    return task, section


def training_prompts(args: argparse.Namespace, tokenizer: Any = None) -> tuple[list[str], list[str]]:
    """The training problems of the run configuration as (prompt string, gold answer); the
    chat template renders them with ``tokenizer``."""
    from r1core.data.synthetic.base import split_problems
    from r1core.data.templates import build_template

    task, section = training_task(args)
    train, _ = split_problems(task, section.num_train, section.num_eval, seed=section.seed)
    template = build_template(section.template, tokenizer=tokenizer, system=section.system_prompt,
                              instruction=section.instruction)
    return [template(p.problem) for p in train], [p.answer for p in train]


# ----------------------------------------------------------------------------- r1core

def run_r1core(args: argparse.Namespace, start: Path, work: Path) -> dict[str, Any]:
    """``r1core train`` from ``start`` for ``args.steps`` GRPO steps; per-step metrics."""
    run_dir = work / "r1core"
    overrides = run_config_overrides(args) + reward_overrides(args) + [
        f"run.output_root={work}", "run.name=r1core", f"policy.hf_dir={start}", "sft.epochs=0",
        f"policy.lr={args.lr}", f"trainer.steps={args.steps}", f"trainer.prompts_per_step={args.prompts}",
        f"trainer.samples_per_prompt={args.group}", f"trainer.max_response_tokens={args.max_tokens}",
        f"trainer.temperature={args.temperature}",
        f"eval.every={args.steps}", "eval.k=1", "logging.tensorboard=false", f"checkpoint.interval={args.steps}",
        f"rollout.max_model_len={max(256, args.max_tokens + 128)}",
    ]
    if args.model == "smollm2":
        # The checkpoint's own fp32 (vLLM's "auto" would sample in bf16) and a KV cache that
        # holds a step's samples at once (the 64 MiB default fits ~1,400 tokens of this model).
        overrides += ["rollout.dtype=float32", "rollout.kv_cache_memory_bytes=1073741824"]
    command = [sys.executable, "-m", "r1core.cli", "train", *overrides]
    start_time = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start_time
    if proc.returncode != 0:
        raise RuntimeError(f"r1core train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("phase") == "train"]
    if len(train) != args.steps:
        raise RuntimeError(f"expected {args.steps} r1core train steps in {run_dir}/metrics.jsonl, found {len(train)}")
    return {
        "command": " ".join(command[1:]),
        "wall_s": wall,
        "train_tokens": [r["train_tokens"] for r in train],
        "step_s": [r["step_s"] for r in train],
        "reward": [r["reward_mean"] for r in train],
        "accuracy": [r.get("reward/math_accuracy") for r in train],
        "response_length": [r["response_length_mean"] for r in train],
        "response_length_max": [r["response_length_max"] for r in train],
        "generate_s": [r["generate_s"] for r in train],
    }


# ----------------------------------------------------------------------------- TRL

def run_trl(args: argparse.Namespace, start: Path, work: Path) -> dict[str, Any]:
    """TRL ``GRPOTrainer`` from ``start`` with the same problems, reward and step shape."""
    import datasets
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, TrainerCallback

    from r1core.data.tokenizers import ResponseDecoder, load_tokenizer, stop_token_ids
    from r1core.rewards import compose_rewards, scoring_in_process

    tokenizer = load_tokenizer(start)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
    prompts, answers = training_prompts(args, tokenizer)
    dataset = datasets.Dataset.from_dict({"prompt": prompts, "answer": answers})
    composite = compose_rewards(dict(args.reward), configs={"r1_format": {"allow_missing_think_open": True}}
                                if "r1_format" in args.reward else None)
    # r1core's decoder: the stop tokens dropped, every other special token (the R1 tags) kept.
    decode = ResponseDecoder(tokenizer, stop_token_ids(tokenizer, start, chat=args.template == "chat"))
    # Chat prompts carry their special tokens in the text; the tokenizer adds none to them.
    add_special = args.template != "chat"

    per_step: dict[str, list[float]] = {"train_tokens": [], "reward": [], "accuracy": [], "response_length": [],
                                        "response_length_max": [], "generate_s": []}

    # Generation time per step: TRL calls the model's generate (or generate_batch) once per
    # generation batch, which is one optimiser step here.
    for method in ("generate", "generate_batch"):
        inner = getattr(model, method, None)
        if inner is None:
            continue

        def timed(*a, _inner=inner, **k):
            t0 = time.perf_counter()
            out = _inner(*a, **k)
            per_step["generate_s"].append(time.perf_counter() - t0)
            return out

        setattr(model, method, timed)

    def r1core_reward(prompts: list[str], completions: list[str], completion_ids: list[list[int]],
                      answer: list[str], **_: Any) -> list[float]:
        # Score the same text the r1core trainer scores: the completion ids without EOS, decoded
        # with special tokens kept. TRL's ``completions`` are decoded with
        # skip_special_tokens=True, which drops the R1 tags (<think>, <answer>, ... are special
        # tokens of this tokenizer) and would zero the format reward.
        texts = [decode(ids) for ids in completion_ids]
        # In TRL's own process, as TRL calls its reward functions: a detour through r1core's
        # shared reward pool would charge TRL's steps for inter-process transfers.
        with scoring_in_process():
            totals, parts = composite.score(texts, list(answer))
        prompt_ids = [tokenizer.encode(p, add_special_tokens=add_special) for p in prompts]
        per_step["train_tokens"].append(float(sample_tokens(prompt_ids, completion_ids)))
        per_step["reward"].append(sum(totals) / len(totals))
        per_step["accuracy"].append(sum(parts["math_accuracy"]) / len(totals))
        per_step["response_length"].append(sum(len(c) for c in completion_ids) / len(completion_ids))
        per_step["response_length_max"].append(float(max(len(c) for c in completion_ids)))
        return totals

    step_s: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            step_s.append(time.perf_counter() - self.t0)

    config = trl.GRPOConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1,  # one generation batch = one optimiser step, as in r1core
        num_generations=args.group,
        max_completion_length=args.max_tokens,
        temperature=args.temperature,
        top_p=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        beta=0.0,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.28,
        scale_rewards="group",
        num_iterations=1,
        use_vllm=False,  # TRL's vLLM paths need CUDA
        use_transformers_continuous_batching=args.trl_generation == "continuous_batching",
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        max_steps=args.steps,
        save_strategy="no",
        seed=args.seed,
        disable_dropout=True,
        log_completions=False,
    )
    trainer = trl.GRPOTrainer(model=model, reward_funcs=r1core_reward, args=config, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[StepTimer()])
    start_time = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start_time
    if not (len(step_s) == len(per_step["train_tokens"]) == len(per_step["generate_s"]) == args.steps):
        raise RuntimeError(f"TRL ran {len(step_s)} steps, generated {len(per_step['generate_s'])} batches and "
                           f"scored {len(per_step['train_tokens'])}, expected {args.steps} of each")
    logged = [h for h in trainer.state.log_history if "reward" in h]
    return {"wall_s": wall, "step_s": step_s, **per_step,
            "logged_reward": [h["reward"] for h in logged],
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "datasets": datasets.__version__}}


# ----------------------------------------------------------------------------- report

def describe_model(hf_dir: Path) -> str:
    """``Qwen2, 24.2M parameters (hidden 512, 8 layers, ...)``: the shape from a checkpoint's
    config.json, the count from the model transformers builds from it (on the meta device)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(hf_dir)
    with torch.device("meta"):
        count = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_config(config).parameters())
    family = {"qwen2": "Qwen2", "llama": "Llama"}.get(config.model_type, config.model_type)
    return (f"{family}, {count / 1e6:.1f}M parameters (hidden {config.hidden_size}, "
            f"{config.num_hidden_layers} layers, {config.num_attention_heads} heads / {config.num_key_value_heads} KV, "
            f"SwiGLU {config.intermediate_size}, vocab {config.vocab_size})")


def describe_task(args: argparse.Namespace) -> str:
    """The arithmetic task's operand counts and bound, as the run configuration sets them."""
    config = training_task(args)[0].config
    if config.max_terms:
        terms = f"{config.num_terms:g} to {config.max_terms} operands, uniformly"
    else:
        terms = f"{config.num_terms:g} operands"
    return f"{terms}; operands <= {config.max_operand}"


def summarize(name: str, run: dict[str, Any]) -> dict[str, Any]:
    return {
        "impl": name,
        "tokens_per_s": throughput(run["train_tokens"], run["step_s"]),
        "tokens_per_s_after_step1": throughput(run["train_tokens"], run["step_s"], skip_first=True),
        "median_step_s": sorted(run["step_s"])[len(run["step_s"]) // 2],
        # The fastest step: on a shared machine other processes only ever slow a step down,
        # so this is the statistic least affected by them.
        "best_step_tokens_per_s": max(t / s for t, s in zip(run["train_tokens"], run["step_s"])),
        "reward_first": run["reward"][0],
        "reward_last": run["reward"][-1],
        "reward_last3_mean": sum(run["reward"][-3:]) / len(run["reward"][-3:]),
        "accuracy_last": run["accuracy"][-1],
        "response_length_last": run["response_length"][-1],
        "response_length_mean": sum(run["response_length"]) / len(run["response_length"]),
        # Longest response of a step over its mean, averaged: what padding to the longest costs.
        "max_over_mean_length": sum(m / a for m, a in zip(run["response_length_max"], run["response_length"]))
        / len(run["response_length"]),
        "median_generate_s": sorted(run["generate_s"])[len(run["generate_s"]) // 2],
        "train_tokens_total": sum(run["train_tokens"]),
        "wall_s": run["wall_s"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = os.getloadavg()
    work = args.work_dir / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=False)
    work = work.resolve()
    t0 = time.perf_counter()
    start = args.start_dir.resolve() if args.start_dir else prepare_start(args, work)
    cold_start_s = time.perf_counter() - t0
    print(f"start checkpoint: {start} ({cold_start_s:.0f} s)", flush=True)

    runs: dict[str, dict[str, Any]] = {}
    if not args.skip_r1core:
        runs["r1core"] = run_r1core(args, start, work)
        print("r1core:", json.dumps(summarize("r1core", runs["r1core"])), flush=True)
    if not args.skip_trl:
        runs["trl"] = run_trl(args, start, work)
        print("trl:", json.dumps(summarize("trl", runs["trl"])), flush=True)
    load_end = os.getloadavg()

    summaries = {name: summarize(name, run) for name, run in runs.items()}
    ratio = ratio_steady = ratio_best = None
    if len(summaries) == 2:
        ratio_best = summaries["r1core"]["best_step_tokens_per_s"] / summaries["trl"]["best_step_tokens_per_s"]
        ratio = summaries["r1core"]["tokens_per_s"] / summaries["trl"]["tokens_per_s"]
        ratio_steady = summaries["r1core"]["tokens_per_s_after_step1"] / summaries["trl"]["tokens_per_s_after_step1"]
        print(f"r1core / TRL training tokens per second: {ratio:.2f}x over all steps, "
              f"{ratio_steady:.2f}x after step 1, {ratio_best:.2f}x fastest step (goal >= 3x)", flush=True)

    import transformers
    import trl

    meta = {
        "what": "end-to-end GRPO step (generate, reward, update, weight sync) on CPU, r1core vs TRL GRPOTrainer",
        "preset": args.preset,
        "model": (f"{describe_model(start)} after r1core cold-start SFT ({start})" if args.model == "embedded"
                  else f"{describe_model(start)}: SmolLM2-135M-Instruct as shipped, no cold start ({start})"),
        "task": (f"synthetic arithmetic ({describe_task(args)}), {args.template} template"
                 + (f" with the instruction {args.instruction!r}" if args.instruction else "") + ", 700 training problems"),
        "reward": (" + ".join(f"{w:g} * {n}" for n, w in args.reward.items())
                   + " (r1core.rewards, in-process for TRL, worker pool for r1core)"),
        "shape": (f"{args.steps} steps x {args.prompts} prompts x {args.group} samples, <= {args.max_tokens} completion "
                  f"tokens, temperature {args.temperature:g}"),
        "optimiser": f"AdamW lr {args.lr} constant, grad clip 1.0, one on-policy update per step, DAPO loss, clip 0.2/0.28, no KL, fp32",
        "generation": ("r1core: vLLM CPU backend; TRL: transformers "
                       + ("generate" if args.trl_generation == "generate" else "continuous batching")
                       + " (use_vllm=False: TRL's vLLM paths need CUDA)"),
        "tokens": "prompt + completion tokens of every sample of a step, summed, over the summed step wall time",
        "ratio_r1core_over_trl": None if ratio is None else round(ratio, 3),
        "ratio_r1core_over_trl_after_step1": None if ratio_steady is None else round(ratio_steady, 3),
        "ratio_r1core_over_trl_fastest_step": None if ratio_best is None else round(ratio_best, 3),
        "goal": "r1core >= 3x TRL tokens/s",
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end],
        "cold_start": (f"reused --start-dir {start}" if args.start_dir
                       else f"prepared here: r1core cold-start SFT, {args.sft_epochs} epochs, {cold_start_s:.0f} s"),
        "per_step": {name: {k: run[k] for k in ("train_tokens", "step_s", "generate_s", "reward", "response_length",
                                                "response_length_max")}
                     for name, run in runs.items()},
    }
    if "r1core" in runs:
        meta["r1core_command"] = runs["r1core"]["command"]
    results = [
        Result(case=f"{args.preset}: {args.prompts}x{args.group}x{args.max_tokens}tok", impl=name,
               ms=1e3 * s["median_step_s"],
               note=f"{s['tokens_per_s']:.0f} tok/s ({s['tokens_per_s_after_step1']:.0f} after step 1, "
                    f"{s['best_step_tokens_per_s']:.0f} fastest step); generate {s['median_generate_s']:.2f} s/step; "
                    f"responses {s['response_length_mean']:.0f} tokens, longest/mean {s['max_over_mean_length']:.1f}; "
                    f"reward {s['reward_first']:.3f} -> {s['reward_last']:.3f} at step {args.steps}",
               extra=s)
        for name, s in summaries.items()
    ]
    for s in summaries.values():
        print(json.dumps(s))
    if not args.no_write:
        name = "grpo_step_vs_trl" if args.preset == "embedded" else f"grpo_step_vs_trl_{args.preset}"
        path = write_results(name, torch.device("cpu"), results, meta)
        with path.with_suffix(".md").open("a") as md:
            md.write("\n" + CAVEATS)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
