"""Gold answers from the fields datasets store them in.

A dataset's answer field is either the final answer itself or a worked solution that ends in
one: GSM8K writes ``... #### 72``, MATH writes ``... \\boxed{\\frac{1}{2}}``. Each function
here turns such a field into the gold string a reward compares with, and raises
``ValueError`` (or ``TypeError``) for a field it cannot read, which the loaders report with
the file, row and field. ``answer_format`` names them in ``data.answer_format``:

- ``auto``: ``#### N`` -> ``N``; else a solution with ``\\boxed{}`` -> its last box's content;
  else the value as written (numbers as strings without a trailing ``.0``).
- ``plain``: the value as written.
- ``gsm8k``: the text after the last ``####`` (required), thousands separators removed.
- ``boxed``: the content of the last ``\\boxed{}`` (required).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from r1core.rewards.extract import find_boxed

_GSM8K_NUMBER = re.compile(r"^-?[\d,]*\.?\d+$")


def answer_to_string(value: Any) -> str:
    """Gold answers as strings: strings are stripped; integral floats lose their ``.0``
    (AMC's ``27.0`` -> ``"27"``); other numbers use ``str``."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not an answer")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"non-finite number {value!r}")
        return str(int(value)) if value.is_integer() else str(value)
    raise TypeError(f"expected a string or a number, got {type(value).__name__}")


def gsm8k_gold(answer: Any) -> str:
    """The final answer of a GSM8K solution: what follows the last ``####``, commas removed."""
    if not isinstance(answer, str):
        raise TypeError(f"expected a string, got {type(answer).__name__}")
    if "####" not in answer:
        raise ValueError("no '####' final-answer marker in the solution")
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not _GSM8K_NUMBER.match(gold):
        raise ValueError(f"final answer {gold!r} after '####' is not a number")
    return gold


def boxed_gold(solution: Any) -> str:
    """The content of the last ``\\boxed{...}`` of a MATH-style solution."""
    if not isinstance(solution, str):
        raise TypeError(f"expected a string, got {type(solution).__name__}")
    boxes = find_boxed(solution)
    if not boxes:
        raise ValueError("no \\boxed{...} answer in the solution")
    content = boxes[-1][1].strip()
    if not content:
        raise ValueError("the last \\boxed{} of the solution is empty")
    return content


def aime_gold(answer: Any) -> str:
    """AIME answers are integers 0-999, sometimes zero-padded (``"025"``)."""
    text = answer_to_string(answer)
    if not re.fullmatch(r"\d{1,3}", text):
        raise ValueError(f"AIME answer {text!r} is not an integer in 0-999")
    return str(int(text))


def auto_gold(value: Any) -> str:
    """``#### N`` (GSM8K), else the last ``\\boxed{}`` (MATH), else the value as written."""
    if isinstance(value, str):
        if "####" in value:
            return gsm8k_gold(value)
        if find_boxed(value):
            return boxed_gold(value)
    return answer_to_string(value)


GOLD_FORMATS: dict[str, Callable[[Any], str]] = {
    "auto": auto_gold,
    "plain": answer_to_string,
    "gsm8k": gsm8k_gold,
    "boxed": boxed_gold,
}


def gold_format(name: str) -> Callable[[Any], str]:
    """The normaliser ``name`` of :data:`GOLD_FORMATS`."""
    if name not in GOLD_FORMATS:
        raise ValueError(f"unknown answer format {name!r}; valid: {', '.join(GOLD_FORMATS)}")
    return GOLD_FORMATS[name]
