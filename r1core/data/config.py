"""The run's ``data`` section: where the training and held-out problems come from and how
they become prompts."""

from __future__ import annotations

from dataclasses import dataclass, field

from r1core.data.benchmarks import parse_benchmark_name
from r1core.data.golds import GOLD_FORMATS
from r1core.data.loaders import normalize_fields
from r1core.data.synthetic.base import SYNTHETIC_TASKS
from r1core.data.templates import TEMPLATES


@dataclass
class DataConfig:
    """Problems and prompts: a synthetic task (the default) or dataset files.

    With ``train_files`` empty the run generates ``num_train`` problems of the synthetic
    ``task``; otherwise it reads them from the files (and benchmarks by name), shuffled with
    ``seed`` every epoch by the prompt stream, whose position is checkpointed.
    """

    task: str = "arithmetic"
    """A synthetic task (``arithmetic``, ``countdown``), used when ``train_files`` is empty."""
    difficulty: float = 0.0
    """The task's difficulty knob in [0, 1] (ignored for the fields ``options`` sets)."""
    options: dict[str, float] = field(default_factory=lambda: {"num_terms": 3.0, "max_operand": 5.0})
    """Explicit fields of the task's config (``num_terms``, ``max_operand`` of ``arithmetic``)."""
    num_train: int = 700
    """Synthetic task: training problems (drawn with repetition; the held-out ones are
    distinct from all)."""
    num_eval: int = 128
    """Held-out problems: the synthetic task's, disjoint from the training ones; with
    ``train_files`` and no ``eval_files``, this many training problems are held out (0: no
    held-out evaluation)."""
    train_files: list[str] = field(default_factory=list)
    """Training problems: ``.jsonl``/``.parquet`` files, or shipped benchmarks by name
    (``gsm8k``, ``gsm8k:train``, ``math500``, ``aime24``, ``amc23``; a name without a split
    takes ``train`` where the benchmark has one). Empty: the synthetic ``task``."""
    eval_files: list[str] = field(default_factory=list)
    """Held-out problems evaluated during training, as ``train_files`` (a name without a
    split takes ``test``)."""
    fields: dict[str, str] = field(default_factory=dict)
    """Source field of each part of a problem in the files: ``prompt``, ``answer``, and
    optionally ``id`` and ``system`` (a row's own system prompt), e.g.
    ``{prompt: question, answer: final}``. Default: the first of ``problem``, ``question``,
    ``prompt`` present, and ``answer``. Benchmarks named keep their own fields."""
    answer_format: str = "auto"
    """How the answer field becomes the gold: ``auto`` (GSM8K ``#### N`` -> ``N``, a solution
    with ``\\boxed{}`` -> its last box, else as written), ``plain``, ``gsm8k``, ``boxed``."""
    template: str = "compact"
    """Prompt template: ``compact`` (the embedded run's), ``r1-zero``, ``chat`` (the
    tokenizer's chat template) or ``raw`` (the problem as written)."""
    system_prompt: str = ""
    """System message of the ``chat`` template (a row's ``system`` field replaces it)."""
    instruction: str = ""
    """Appended to every problem on its own line (``chat``, ``r1-zero``, ``raw``), e.g.
    ``Please reason step by step, and put your final answer within \\boxed{}.``"""
    max_prompt_tokens: int = 0
    """Prompts longer than this many tokens are skipped (the count is logged). 0: the
    longest prompt of the data, or what the model's positions leave after the response
    budget, whichever is smaller."""
    epochs: float = 0.0
    """Passes over the training problems; when > 0 the RL run takes
    ``ceil(epochs * problems / trainer.prompts_per_step)`` steps instead of
    ``trainer.steps``."""
    seed: int = 0
    """Seed of problem generation, of the held-out split of ``train_files`` and of the
    prompt order."""

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"data.template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        if not self.train_files and self.task not in SYNTHETIC_TASKS:
            raise ValueError(f"data.task must be one of {', '.join(SYNTHETIC_TASKS)}, got {self.task!r} "
                             "(or name dataset files in data.train_files)")
        if self.answer_format not in GOLD_FORMATS:
            raise ValueError(f"data.answer_format must be one of {', '.join(GOLD_FORMATS)}, got {self.answer_format!r}")
        for key, entries, split in (("train_files", self.train_files, "train"), ("eval_files", self.eval_files, "test")):
            for index, entry in enumerate(entries):
                if not isinstance(entry, str) or not entry.strip():
                    raise ValueError(f"data.{key}[{index}] must be a file path or a benchmark name, got {entry!r}")
                try:
                    parse_benchmark_name(entry, split)
                except ValueError as error:
                    raise ValueError(f"data.{key}[{index}]: {error}") from None
        if self.eval_files and not self.train_files:
            raise ValueError("data.eval_files needs data.train_files (the synthetic task makes its own held-out set)")
        try:
            normalize_fields(self.fields)
        except ValueError as error:
            raise ValueError(f"data.fields: {error}") from None
        if self.system_prompt and self.template != "chat":
            raise ValueError(f"data.system_prompt is shown by the chat template only (data.template={self.template!r})")
        if self.instruction and self.template == "compact":
            raise ValueError("data.instruction is not shown by the compact template; use raw, r1-zero or chat")
        for key in ("num_train", "num_eval", "max_prompt_tokens"):
            if getattr(self, key) < 0:
                raise ValueError(f"data.{key} must be >= 0, got {getattr(self, key)}")
        if not self.train_files and self.num_train < 1:
            raise ValueError("data.num_train must be >= 1 for the synthetic task")
        if not self.epochs >= 0:
            raise ValueError(f"data.epochs must be >= 0, got {self.epochs}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"data.difficulty must lie in [0, 1], got {self.difficulty}")
