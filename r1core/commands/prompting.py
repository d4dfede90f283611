"""What ``r1core train``, ``sft`` and ``eval`` share about prompts: the template of the
run's ``data`` section, the tokens that end a response, the decoder, and the engine length
that fits the prompts and the response budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1core.config.loader import ConfigError
from r1core.data.config import DataConfig
from r1core.data.prompts import LengthPlan, plan_lengths
from r1core.data.templates import PromptTemplate, build_template
from r1core.data.tokenizers import ResponseDecoder, stop_token_ids


@dataclass
class Prompting:
    """template: problem -> prompt text. stop_ids: tokens that end a response (the
    engine stops there, the decoder drops them). decode: response ids -> text."""

    template: PromptTemplate
    stop_ids: list[int]
    decode: ResponseDecoder


def prompting(data: DataConfig, tokenizer: Any, hf_dir: str | Path | None) -> Prompting:
    """The run's prompting for ``tokenizer`` (and the checkpoint in ``hf_dir``, whose
    ``generation_config.json`` may name more stop tokens)."""
    try:
        template = build_template(data.template, tokenizer=tokenizer, system=data.system_prompt,
                                  instruction=data.instruction)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data.template={data.template!r}: {error}", key="data.template") from None
    stop_ids = stop_token_ids(tokenizer, hf_dir, chat=data.template == "chat")
    return Prompting(template, stop_ids, ResponseDecoder(tokenizer, stop_ids))


def model_positions(hf_dir: str | Path) -> int | None:
    """``max_position_embeddings`` of the checkpoint's ``config.json`` (None if it has none)."""
    from r1core.models.hf_config import load_hf_config

    config = load_hf_config(hf_dir)
    config = config.get("text_config", config)
    value = config.get("max_position_embeddings")
    return int(value) if value else None


def length_plan(data: DataConfig, configured_max_model_len: int, hf_dir: str | Path, *, longest_prompt: int,
                response_budget: int) -> LengthPlan:
    """:func:`r1core.data.prompts.plan_lengths` for the checkpoint in ``hf_dir``; a budget that
    cannot fit is a :class:`ConfigError` naming the key to change."""
    try:
        return plan_lengths(longest_prompt=longest_prompt, response_budget=response_budget,
                            configured_max_model_len=configured_max_model_len, model_positions=model_positions(hf_dir),
                            max_prompt_tokens=data.max_prompt_tokens)
    except ValueError as error:
        raise ConfigError(str(error), key="trainer.max_response_tokens") from None
