"""Configuration sections owned by the trainer (``r1core train`` / ``r1core sft``).

Plain dataclasses with documented fields and no heavy imports, so the command can
validate a configuration before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r1core.trainer.bootstrap import TinyModelConfig


@dataclass
class PolicyConfig:
    """The model being trained."""

    hf_dir: str = ""
    """Hugging Face checkpoint to start from; empty builds the embedded default model."""
    dtype: str = "auto"
    """Parameter dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float32``, ``bfloat16``."""
    lr: float = 2e-4
    """RL learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    clip_grad: float = 1.0
    """Global gradient-norm clip (0 disables)."""

    def torch_dtype(self):
        """The parameter dtype as a ``torch.dtype`` (``auto``: bfloat16 on CUDA, float32 on CPU)."""
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if torch.cuda.is_available() else torch.float32
        return getattr(torch, self.dtype)

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"policy.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if not self.lr > 0:
            raise ValueError(f"policy.lr must be > 0, got {self.lr}")


@dataclass
class DataConfig:
    """Where the prompts come from: a synthetic verifiable task."""

    task: str = "arithmetic"
    """A synthetic task (``arithmetic``, ``countdown``)."""
    difficulty: float = 0.0
    """The task's difficulty knob in [0, 1] (ignored for the fields ``options`` sets)."""
    options: dict[str, float] = field(default_factory=lambda: {"num_terms": 3.0, "max_operand": 5.0})
    """Explicit fields of the task's config (``num_terms``, ``max_operand`` of ``arithmetic``)."""
    num_train: int = 700
    """Training problems (drawn with repetition; the held-out ones are distinct from all)."""
    num_eval: int = 128
    """Held-out problems, disjoint from the training ones."""
    template: str = "compact"
    """Prompt template: ``compact``, ``r1-zero`` or ``chat``."""
    seed: int = 0
    """Seed of problem generation."""


@dataclass
class RewardConfig:
    """Rule-based rewards, weighted and scored in a worker pool."""

    weights: dict[str, float] = field(default_factory=lambda: {"math_accuracy": 1.0, "r1_format": 0.1})
    """Registered reward name -> weight."""
    num_workers: int = 2
    """Reward worker processes."""
    sample_timeout_s: float = 10.0
    """Per-sample budget; a sample over it scores 0 with the reason logged."""


@dataclass
class SFTConfig:
    """Supervised fine-tuning: the cold start of ``r1core train`` (skipped when ``epochs`` is
    0) and the whole of ``r1core sft``."""

    epochs: float = 20.0
    """Passes over the traces (fractions allowed)."""
    batch_size: int = 64
    """Traces per optimiser step."""
    micro_batch_size: int = 64
    """Traces per forward/backward; the loss is the token-mean over the whole batch however
    it is split."""
    lr: float = 3e-3
    """Learning rate (AdamW)."""
    trace_noise: float = 0.5
    """Embedded run only: share of synthetic cold-start traces whose final answer is wrong.
    R1's cold-start data is imperfect; here the share is explicit, and RL on verifiable
    rewards has to correct what SFT imitated."""
    traces: str = ""
    """``r1core sft``: jsonl file of ``{"prompt": ..., "response": ...}`` traces."""
    seed: int = 0
    """Shuffling seed."""


@dataclass
class EvalConfig:
    """Held-out evaluation: ``k`` samples per problem; avg@k is R1's pass@1."""

    every: int = 10
    """Evaluate every this many RL steps (and before the first and after the last)."""
    k: int = 4
    """Samples per problem."""
    temperature: float = 1.0
    """Sampling temperature."""
    max_tokens: int = 48
    """Generation budget per sample."""
    benchmark: str = ""
    """``r1core eval``: a shared benchmark (``gsm8k``, ``math500``, ``aime24``, ``amc23``) or
    a jsonl/parquet file with ``problem`` and ``answer`` fields."""
    split: str = "test"
    """``r1core eval``: the benchmark split."""
    limit: int = 0
    """``r1core eval``: evaluate only the first ``limit`` problems (0: all)."""


@dataclass
class EmbeddedConfig:
    """The tokenizer and model the embedded default run builds for itself."""

    vocab_size: int = 96
    """Target BPE vocabulary (special tokens and single digits included)."""
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the random-initialised Qwen2 model."""


@dataclass
class GRPOConfig:
    """Shape of one GRPO step."""

    steps: int = 50
    """Optimiser-step batches to train."""
    prompts_per_step: int = 32
    """Prompts sampled per step (before dynamic sampling drops any)."""
    samples_per_prompt: int = 8
    """Group size: responses per prompt."""
    max_response_tokens: int = 48
    """Generation budget per response."""
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
    overlong_buffer: int = 0
    """DAPO overlong reward shaping: a linear penalty over the last ``overlong_buffer`` tokens
    before ``max_response_tokens`` (0 turns it off)."""
    overlong_penalty: float = 1.0
    """Penalty of overlong shaping at (and beyond) ``max_response_tokens``."""
    overlong_filter: bool = False
    """Mask responses that hit the length limit out of the loss (they still count in their
    group's baseline)."""
    dynamic_sampling: bool = False
    """Drop groups whose rewards are all equal and refill from further prompts (DAPO)."""
    max_refill_tries: int = 3
    """Extra generation rounds dynamic sampling may use per step."""
    seed: int = 0
    """Seed of sampling and data order."""
