"""Final-answer extraction from model responses (pure Python, no math-verify).

The rules, applied in this order (documented here once; ``math.py`` and the tests follow them):

1. Answer region. If the response has a ``</think>``, only the text after the *last*
   ``</think>`` is searched: the chain of thought is scratch space, and a value boxed inside it
   is neither the answer nor counted as a candidate. A response that opens ``<think>`` and
   never closes it (truncated) has no answer region. Otherwise the whole response is searched.
2. Candidates, by the first marker kind present in the region:
   a. ``<answer>...</answer>`` tags: one candidate per tag (the tag's last ``\\boxed{}`` if it
      holds one, else its whole text);
   b. ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces, also ``\\boxed 5``): one per box;
   c. GSM8K's ``#### N``: one per marker, the rest of that line.
   The **last** non-empty candidate is the final answer (an empty ``\\boxed{}``, a
   ``\\boxed{\\phantom{2}}`` cell or an empty tag is skipped). With no marker, or only empty
   ones, the caller may fall back to math-verify's own extraction (last number or LaTeX,
   "answer is ..." anchors).
3. Spraying. Distinct candidates are counted after removing whitespace and ``\\phantom{...}``
   (models draw empty ``\\boxed{\\phantom{2}}`` cells in long-division tableaux); if more than
   ``MathAccuracyConfig.max_distinct_answers`` (3) distinct non-empty candidates remain, the response is a spray of guesses
   and earns nothing. A list of candidates inside one box is handled by math-verify, which
   never equates a set or tuple with a single value.

:func:`normalize_answer` turns a final answer into the key majority voting (maj@k) counts;
it is a canonical spelling, not a verifier: two keys that differ may still be equal values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# The R1 format: reasoning in <think>...</think>, then the answer in <answer>...</answer>.
# Every module that writes or reads the format takes the tags from here.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
R1_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# Everything here must stay linear in the response length: megabyte answers with thousands of
# unclosed tags or braces are part of the adversarial test set.
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_PHANTOM_RE = re.compile(r"\\phantom\{[^{}]*\}")
_WHITESPACE_RE = re.compile(r"\s+")

MarkerKind = Literal["answer_tag", "boxed", "hash", "none"]


@dataclass(frozen=True)
class ExtractedAnswer:
    """What the extraction found in one response.

    Fields:
        kind: which marker produced the candidates ("none" when no marker was found).
        final: the final answer text (the last candidate), or None.
        region: the text that was searched (after the last ``</think>``, or all of it).
        num_distinct: number of distinct non-empty candidates (after normalisation).
        boxed: True when ``final`` is a whole ``\\boxed{...}`` expression (so math-verify
            receives it with its box, and applies its boxed normalisation).
    """

    kind: MarkerKind
    final: str | None
    region: str
    num_distinct: int
    boxed: bool = False


def answer_region(response: str) -> str:
    """Text after the last ``</think>``; empty if ``<think>`` is opened and never closed."""
    close = response.rfind(THINK_CLOSE)
    if close >= 0:
        return response[close + len(THINK_CLOSE) :]
    if THINK_OPEN in response:
        return ""
    return response


_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)")


def _brace_matches(text: str) -> dict[int, int]:
    """Map from each ``{`` index to its matching ``}`` index, escapes respected.

    One pass with a stack, so finding every box is linear even on megabytes of unbalanced
    braces (rescanning from each opening brace would be quadratic).
    """
    matches: dict[int, int] = {}
    stack: list[int] = []
    for match in _BRACE_RE.finditer(text):
        char = match.group()
        if char == "{":
            stack.append(match.start())
        elif char == "}" and stack:
            matches[stack.pop()] = match.start()
    return matches


def find_boxed(text: str) -> list[tuple[str, str]]:
    """All ``\\boxed``/``\\fbox`` answers in order, as (``\\boxed{content}``, content) pairs.

    An unbalanced box (a truncated response) is skipped. ``\\boxed 5`` (space form) takes the
    next whitespace-free token. Boxes nested inside a listed box are not listed separately.
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    matches = _brace_matches(text)
    found: list[tuple[str, str]] = []
    position = 0
    for box in _BOX_RE.finditer(text):
        start, after = box.start(), box.end()
        if start < position:
            continue  # inside the previous box
        if after < len(text) and text[after] == "{":
            close = matches.get(after, -1)
            if close >= 0:
                content = text[after + 1 : close]
                found.append(("\\boxed{" + content + "}", content))
                position = close + 1
        elif after < len(text) and text[after] == " ":
            token = re.match(r" +([^\s$]+)", text[after : after + 4096])
            if token:
                found.append(("\\boxed{" + token.group(1) + "}", token.group(1)))
                position = after + token.end()
    return found


def find_answer_tags(text: str) -> list[str]:
    """Contents of every closed ``<answer>...</answer>`` in order (non-greedy, like a lazy
    regex, but linear: once an opening tag has no closing tag after it, none later has)."""
    contents = []
    position = 0
    while True:
        start = text.find(ANSWER_OPEN, position)
        if start < 0:
            return contents
        end = text.find(ANSWER_CLOSE, start + len(ANSWER_OPEN))
        if end < 0:
            return contents
        contents.append(text[start + len(ANSWER_OPEN) : end])
        position = end + len(ANSWER_CLOSE)


def final_answer_tag(response: str) -> str | None:
    """The stripped content of the last closed ``<answer>...</answer>``, or None."""
    tags = find_answer_tags(response)
    return tags[-1].strip() if tags else None


def normalize_candidate(candidate: str) -> str:
    """Key used to count distinct candidates: no whitespace, no ``\\phantom{...}``."""
    return _WHITESPACE_RE.sub("", _PHANTOM_RE.sub("", candidate))


def extract_answer(response: str) -> ExtractedAnswer:
    """Apply the rules of this module's docstring to one response."""
    region = answer_region(response)
    kind: MarkerKind
    # (candidate, final form, boxed) per marker, in order.
    found: list[tuple[str, str, bool]] = []
    tags = find_answer_tags(region)
    if tags:
        kind = "answer_tag"
        for tag in tags:
            boxes = find_boxed(tag)
            found.append((boxes[-1][1], boxes[-1][0], True) if boxes else (tag.strip(), tag.strip(), False))
    else:
        boxes = find_boxed(region)
        if boxes:
            kind = "boxed"
            found = [(content, whole, True) for whole, content in boxes]
        else:
            hashes = _HASH_RE.findall(region)
            if not hashes:
                return ExtractedAnswer("none", None, region, 0)
            kind = "hash"
            found = [(value.strip(), value.strip(), False) for value in hashes]
    # An empty marker (\boxed{}, a \phantom cell, <answer></answer>) is no answer:
    # the final answer is the last non-empty one, None when every marker is empty.
    keys = [normalize_candidate(candidate) for candidate, _, _ in found]
    answers = [(final, boxed) for key, (_, final, boxed) in zip(keys, found) if key]
    final, boxed_final = answers[-1] if answers else (None, False)
    return ExtractedAnswer(kind, final, region, len(set(keys) - {""}), boxed_final)


_VOTE_DELETE_RE = re.compile(r"\\left|\\right|\\[!,;:]|\\displaystyle|\\?\$|\\\(|\\\)|\\\[|\\\]|\^\{?\\circ\}?|\\?%")
_VOTE_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\{([^{}]*)\}")
_VOTE_FRAC_RE = re.compile(r"\\[dt]frac")
_VOTE_ASSIGN_RE = re.compile(r"^[A-Za-z]\w*=(?!=)")
_VOTE_NUMBER_RE = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")


def normalize_answer(answer: str | None) -> str | None:
    """The key under which an extracted answer votes in maj@k (None stays None).

    A whole ``\\boxed{...}`` is unwrapped; ``$``, ``\\(``/``\\)``, ``\\left``/``\\right``,
    LaTeX spacing, degree signs and percent signs are dropped; ``\\text{x}``-style wrappers
    keep their content; ``\\dfrac``/``\\tfrac`` become ``\\frac``; whitespace, a trailing
    full stop and a leading ``x =`` go; a plain number loses thousands separators, a leading
    ``+`` and trailing decimal zeros (``1,000.50`` -> ``1000.5``, ``3.0`` -> ``3``). An answer
    that normalises to nothing is None.
    """
    if answer is None:
        return None
    text = answer.strip()
    boxes = find_boxed(text)
    if len(boxes) == 1 and text.startswith(("\\boxed", "\\fbox")) and text.endswith("}"):
        text = boxes[0][1]
    text = _VOTE_TEXT_RE.sub(r"\1", text)
    text = _VOTE_DELETE_RE.sub("", text)
    text = _VOTE_FRAC_RE.sub(r"\\frac", text)
    text = _WHITESPACE_RE.sub("", text).rstrip(".")
    text = _VOTE_ASSIGN_RE.sub("", text)
    if _VOTE_NUMBER_RE.match(text):
        text = text.replace(",", "").lstrip("+")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        if text in ("-0", ""):
            text = "0"
    return text or None


_LAST_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
# How far from the end of the answer region the fallback looks (as math_accuracy's fallback).
_FALLBACK_TAIL_CHARS = 2000


def final_or_last_number(response: str) -> str | None:
    """The answer a response votes with in maj@k: :func:`extract_answer`'s final answer, or,
    when the response has no marker, the last number near the end of its answer region (the
    answer a reader, and math_accuracy's math-verify fallback, would take). None when there
    is neither."""
    extracted = extract_answer(response)
    if extracted.final is not None:
        return extracted.final
    numbers = _LAST_NUMBER_RE.findall(extracted.region[-_FALLBACK_TAIL_CHARS:])
    return numbers[-1].rstrip(",") if numbers else None
