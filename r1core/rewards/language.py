"""R1's language-consistency reward: the share of the chain of thought in the target language.

DeepSeek-R1 adds "the proportion of target language words in the CoT" to the reward to stop
language mixing. The measure here is script-based and fully specified:

1. The chain of thought is the text before the last ``</think>`` (after a leading
   ``<think>``). No ``</think>``: score 0, or the whole response with
   ``whole_response_without_think``.
2. Math and code are not language: ``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``, fenced
   code blocks and LaTeX command names (``\\frac``) are removed first.
3. Units: every maximal run of letters of one script is a word; in scripts written without
   spaces (Han, Hiragana, Katakana, Thai) every letter is a unit. Single-letter words of
   alphabetic scripts are skipped (they are variables: x, n, α).
4. Score = units in the target language's scripts / all units (0 if there are none).

Languages map to scripts (``LANGUAGE_SCRIPTS``): "en", "fr", "de", "es", ... -> Latin; "zh" ->
Han; "ja" -> Han + Hiragana + Katakana; "ko" -> Hangul; "ru" -> Cyrillic; and so on. So the
measure tells Chinese from English, not French from English (same script).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from r1core.rewards.registry import register_reward

# (first code point, last code point, script); letters outside these ranges count as "other".
_SCRIPT_RANGES = (
    (0x0041, 0x024F, "latin"), (0x1E00, 0x1EFF, "latin"),
    (0x0370, 0x03FF, "greek"), (0x1F00, 0x1FFF, "greek"),
    (0x0400, 0x052F, "cyrillic"),
    (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x0E00, 0x0E7F, "thai"),
    (0x1100, 0x11FF, "hangul"), (0x3130, 0x318F, "hangul"), (0xAC00, 0xD7AF, "hangul"),
    (0x3040, 0x309F, "hiragana"),
    (0x30A0, 0x30FF, "katakana"), (0x31F0, 0x31FF, "katakana"),
    (0x3400, 0x4DBF, "han"), (0x4E00, 0x9FFF, "han"), (0xF900, 0xFAFF, "han"),
    (0x20000, 0x2FA1F, "han"),
)
_UNSPACED_SCRIPTS = frozenset({"han", "hiragana", "katakana", "thai"})

LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {
    **{code: frozenset({"latin"}) for code in (
        "en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "pl", "cs", "tr",
        "id", "vi", "ro", "hu")},
    "zh": frozenset({"han"}),
    "ja": frozenset({"han", "hiragana", "katakana"}),
    "ko": frozenset({"hangul"}),
    "ru": frozenset({"cyrillic"}), "uk": frozenset({"cyrillic"}), "bg": frozenset({"cyrillic"}),
    "el": frozenset({"greek"}),
    "he": frozenset({"hebrew"}),
    "ar": frozenset({"arabic"}), "fa": frozenset({"arabic"}),
    "hi": frozenset({"devanagari"}),
    "th": frozenset({"thai"}),
}

_NOT_LANGUAGE_RE = re.compile(
    r"```.*?```|\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]|\\[A-Za-z]+", re.DOTALL
)
_LETTER_RUN_RE = re.compile(r"[^\W\d_]+")


def _script(char: str) -> str:
    code = ord(char)
    for first, last, script in _SCRIPT_RANGES:
        if first <= code <= last:
            return script
    return "other"


def script_units(text: str) -> dict[str, int]:
    """Count language units per script in ``text`` (rules 2 and 3 of the module docstring)."""
    counts: dict[str, int] = {}
    for run in _LETTER_RUN_RE.findall(_NOT_LANGUAGE_RE.sub(" ", text)):
        # Split a letter run where the script changes ("的x值" is three units, two scripts).
        start = 0
        scripts = [_script(char) for char in run]
        for index in range(1, len(run) + 1):
            if index < len(run) and scripts[index] == scripts[start]:
                continue
            script, length = scripts[start], index - start
            if script in _UNSPACED_SCRIPTS:
                counts[script] = counts.get(script, 0) + length
            elif length > 1:
                counts[script] = counts.get(script, 0) + 1
            start = index
    return counts


def chain_of_thought(response: str, whole_response_without_think: bool) -> str | None:
    """The text before the last ``</think>`` (minus a leading ``<think>``), or None."""
    close = response.rfind("</think>")
    if close < 0:
        return response if whole_response_without_think else None
    thought = response[:close]
    open_index = thought.find("<think>")
    return thought[open_index + len("<think>") :] if open_index >= 0 else thought


@dataclass(frozen=True)
class LanguageConsistencyConfig:
    """Settings of ``language_consistency``.

    Fields:
        target_language: a key of ``LANGUAGE_SCRIPTS`` ("en", "zh", "ja", ...).
        whole_response_without_think: with no ``</think>``, measure the whole response
            instead of scoring 0.
    """

    target_language: str = "en"
    whole_response_without_think: bool = False

    def __post_init__(self) -> None:
        if self.target_language not in LANGUAGE_SCRIPTS:
            raise ValueError(
                f"unknown target_language {self.target_language!r}; "
                f"valid: {', '.join(sorted(LANGUAGE_SCRIPTS))}"
            )


@register_reward("language_consistency", config=LanguageConsistencyConfig)
def language_consistency(
    responses: list[str],
    golds: list[str],
    config: LanguageConsistencyConfig = LanguageConsistencyConfig(),
) -> list[float]:
    """Share in [0, 1] of the chain of thought's units in the target language, per response
    (golds unused)."""
    target = LANGUAGE_SCRIPTS[config.target_language]
    scores = []
    for response in responses:
        thought = chain_of_thought(response, config.whole_response_without_think)
        counts = script_units(thought) if thought else {}
        total = sum(counts.values())
        in_target = sum(count for script, count in counts.items() if script in target)
        scores.append(in_target / total if total else 0.0)
    return scores
