"""Length rewards: DAPO's soft overlong punishment and a linear length penalty.

Lengths are measured on the response string in the unit of ``LengthUnit``: characters,
whitespace-separated words, or tokens of a local ``tokenizer.json`` (Hugging Face
``tokenizers``, loaded once per process). Both rewards are <= 0 and are meant to be added to a
correctness reward with ``compose_rewards``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from r1core._extras import require
from r1core.rewards.registry import register_reward

LengthUnit = Literal["characters", "words", "tokens"]


@lru_cache(maxsize=4)
def _load_tokenizer(path: str) -> Any:
    tokenizers = require("tokenizers", extra="policy", feature="token-length rewards")
    return tokenizers.Tokenizer.from_file(path)


def response_lengths(responses: list[str], unit: LengthUnit, tokenizer_path: str | None) -> list[int]:
    """Length of each response in ``unit`` (``tokens`` needs ``tokenizer_path``)."""
    if unit == "characters":
        return [len(response) for response in responses]
    if unit == "words":
        return [len(response.split()) for response in responses]
    if unit == "tokens":
        if not tokenizer_path:
            raise ValueError("unit='tokens' needs tokenizer_path (a tokenizer.json file)")
        tokenizer = _load_tokenizer(tokenizer_path)
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(responses, add_special_tokens=False)]
    raise ValueError(f"unknown length unit {unit!r}; valid: characters, words, tokens")


@dataclass(frozen=True)
class OverlongPenaltyConfig:
    """Settings of ``overlong_penalty`` (DAPO, Yu et al. 2025, eq. 13).

    Fields:
        max_length: L_max, the generation limit; longer responses get ``-penalty``.
        buffer: L_cache, the soft zone before L_max where the penalty ramps linearly from 0.
        penalty: magnitude of the penalty at and beyond L_max.
        unit: what a length counts (see ``LengthUnit``).
        tokenizer_path: tokenizer.json for ``unit="tokens"``.
    """

    max_length: int = 4096
    buffer: int = 512
    penalty: float = 1.0
    unit: LengthUnit = "characters"
    tokenizer_path: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.buffer <= self.max_length:
            raise ValueError(f"need 0 < buffer <= max_length, got {self.buffer}, {self.max_length}")


def soft_overlong_penalty(length: float, max_length: int, buffer: int, penalty: float = 1.0) -> float:
    """DAPO's soft overlong punishment of one length (Yu et al. 2025, eq. 13): 0 up to
    ``max_length - buffer``; ``-penalty * (L - (max_length - buffer)) / buffer`` up to
    ``max_length``; ``-penalty`` beyond. The one definition, also used by the trainer's
    overlong reward shaping on token lengths (``r1core.algos.sampling.OverlongRewardShaping``)."""
    if max_length < 1 or not 0 < buffer <= max_length:
        raise ValueError(f"need 0 < buffer <= max_length, got buffer {buffer}, max_length {max_length}")
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0, got {penalty}")
    soft_start = max_length - buffer
    if length <= soft_start:
        return 0.0
    if length <= max_length:
        return -penalty * (length - soft_start) / buffer
    return -penalty


@register_reward("overlong_penalty", config=OverlongPenaltyConfig)
def overlong_penalty(
    responses: list[str], golds: list[str], config: OverlongPenaltyConfig = OverlongPenaltyConfig()
) -> list[float]:
    """:func:`soft_overlong_penalty` of each response's length in ``config.unit``: one float in
    ``[-penalty, 0]`` per response."""
    return [soft_overlong_penalty(length, config.max_length, config.buffer, config.penalty)
            for length in response_lengths(responses, config.unit, config.tokenizer_path)]


@dataclass(frozen=True)
class LengthPenaltyConfig:
    """Settings of ``length_penalty``.

    Fields:
        max_length: the length at which the full penalty is reached.
        free_length: lengths up to this cost nothing.
        penalty: magnitude at ``max_length`` and beyond.
        unit: what a length counts (see ``LengthUnit``).
        tokenizer_path: tokenizer.json for ``unit="tokens"``.
    """

    max_length: int = 4096
    free_length: int = 0
    penalty: float = 1.0
    unit: LengthUnit = "characters"
    tokenizer_path: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.free_length < self.max_length:
            raise ValueError(
                f"need 0 <= free_length < max_length, got {self.free_length}, {self.max_length}"
            )


@register_reward("length_penalty", config=LengthPenaltyConfig)
def length_penalty(
    responses: list[str], golds: list[str], config: LengthPenaltyConfig = LengthPenaltyConfig()
) -> list[float]:
    """Linear cost of length: ``-penalty * clip((L - free_length) / (max_length - free_length),
    0, 1)``. One float in [-penalty, 0] per response (golds unused)."""
    span = config.max_length - config.free_length
    return [
        -config.penalty * min(1.0, max(0.0, (length - config.free_length) / span))
        for length in response_lengths(responses, config.unit, config.tokenizer_path)
    ]
