"""Prompt templates: how a problem becomes the text the policy continues.

- ``r1-zero``: DeepSeek-R1-Zero's plain-text conversation. The assistant is told to reason
  inside ``<think> </think>`` and answer inside ``<answer> </answer>``; the prompt ends with
  ``Assistant:`` so a base model continues as the assistant.
- ``chat``: the model's own chat template through its tokenizer
  (``tokenizer.apply_chat_template``), for instruct/distilled models, with an optional system
  prompt and an instruction appended to the problem.
- ``raw``: the problem as written (plus the instruction, if any), for prompts that are
  already complete.
- ``compact``: a minimal prompt for the tiny models of the synthetic CPU runs: the problem,
  a newline and ``<think>``, so every character is in the synthetic vocabulary.

Templates are looked up by name (:func:`get_template`, or :func:`build_template` from the
run's ``data`` settings) and all have the signature
``(problem_text, system=None) -> prompt_text``; ``system`` is a row's own system prompt,
which only the chat template shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from r1core._registry import Registry
from r1core.rewards.extract import THINK_OPEN

# DeepSeek-R1's template for R1-Zero training (Table 1 of the R1 paper), word for word;
# ``{problem}`` is replaced by the question.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {problem}. Assistant:"
)


class PromptTemplate(Protocol):
    def __call__(self, problem: str, system: str | None = None) -> str: ...


def _with_instruction(problem: str, instruction: str | None) -> str:
    return problem.strip() if not instruction else f"{problem.strip()}\n{instruction}"


TEMPLATES: Registry[Callable[..., PromptTemplate]] = Registry("prompt template")


@TEMPLATES.register("r1-zero")
@dataclass(frozen=True)
class R1ZeroTemplate:
    """The R1-Zero conversation; ``template`` must contain ``{problem}``. ``instruction`` is
    appended to the question (on its own line)."""

    template: str = R1_ZERO_TEMPLATE
    instruction: str | None = None

    def __post_init__(self) -> None:
        if "{problem}" not in self.template:
            raise ValueError("an R1-Zero template must contain the placeholder {problem}")

    def __call__(self, problem: str, system: str | None = None) -> str:
        text = _with_instruction(problem, self.instruction)
        if self.template.find("{problem}.") >= 0 and text.endswith((".", "?", "!")):
            # "User: What is 1+1?. Assistant:" would read oddly; the question's own
            # punctuation ends the sentence.
            return self.template.replace("{problem}.", text)
        return self.template.replace("{problem}", text)


@TEMPLATES.register("compact")
@dataclass(frozen=True)
class CompactTemplate:
    """``"<problem>\\n<think>"``: the answer format is learned in SFT, not read from the prompt."""

    def __call__(self, problem: str, system: str | None = None) -> str:
        return f"{problem.strip()}\n{THINK_OPEN}"


@TEMPLATES.register("raw")
@dataclass(frozen=True)
class RawTemplate:
    """The problem text as written (stripped), with ``instruction`` on a line after it."""

    instruction: str | None = None

    def __call__(self, problem: str, system: str | None = None) -> str:
        return _with_instruction(problem, self.instruction)


@TEMPLATES.register("chat")
@dataclass(frozen=True)
class ChatTemplate:
    """A single user turn rendered by the tokenizer's chat template, with the generation
    prompt appended.

    tokenizer: any object with ``apply_chat_template`` (a transformers tokenizer).
    system: optional system message.
    instruction: appended to the problem, e.g. ``"Please reason step by step, and put your
        final answer within \\boxed{}."``
    """

    tokenizer: Any
    system: str | None = None
    instruction: str | None = None

    def __post_init__(self) -> None:
        if not hasattr(self.tokenizer, "apply_chat_template"):
            raise TypeError(f"chat templates need a tokenizer with apply_chat_template, got {type(self.tokenizer).__name__}")
        if getattr(self.tokenizer, "chat_template", "present") is None:
            raise ValueError("the tokenizer has no chat_template; use the 'r1-zero' or 'compact' template")

    def __call__(self, problem: str, system: str | None = None) -> str:
        messages = [{"role": "user", "content": _with_instruction(problem, self.instruction)}]
        system = system or self.system
        if system:
            messages.insert(0, {"role": "system", "content": system})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def get_template(name: str, **kwargs: Any) -> PromptTemplate:
    """The template ``name`` built with ``kwargs`` (``chat`` needs ``tokenizer=``)."""
    return TEMPLATES.get(name)(**kwargs)


def build_template(name: str, *, tokenizer: Any = None, system: str = "", instruction: str = "") -> PromptTemplate:
    """The template ``name`` from the run's ``data`` settings: ``system`` (chat only) and
    ``instruction`` (chat, r1-zero, raw) are passed where the template takes them, and the
    tokenizer to the chat template. Raises ``ValueError`` for a setting the template cannot
    show (a system prompt outside ``chat``, an instruction with ``compact``)."""
    kwargs: dict[str, Any] = {}
    if name == "chat":
        kwargs = {"tokenizer": tokenizer, "system": system or None, "instruction": instruction or None}
    else:
        if system:
            raise ValueError(f"data.system_prompt is shown by the chat template only, not by {name!r}")
        if instruction:
            if name == "compact":
                raise ValueError("data.instruction is not shown by the compact template; use raw, r1-zero or chat")
            kwargs = {"instruction": instruction}
    return get_template(name, **kwargs)
