"""Format rewards: the R1 layout (reasoning inside ``<think>...</think>``, then the answer in
``<answer>...</answer>``), and a marked final answer.

``r1_format`` (binary, DeepSeek-R1's format reward): 1.0 when the whole response is exactly

    [<think>] reasoning </think> <answer> answer </answer>

with only whitespace around the blocks, each tag exactly once, and non-empty reasoning and
answer; else 0.0. The opening ``<think>`` may be omitted when the chat template already ends
the prompt with it (``allow_missing_think_open``).

``r1_tag_count`` (dense shaping): 0.25 for each of the four tags appearing exactly once, in
order; helps a model that has not found the format yet.

``answer_marker`` (binary): 1.0 when the response marks one final answer that
``math_accuracy`` would read (``\\boxed{}``, ``<answer>`` tags or ``####``, non-empty, not a
spray of candidates; the rules of :mod:`r1core.rewards.extract`), whether or not it is right.
A chat model that is asked to box its answer and often does not gets a signal from it before
it solves anything. Its mean is the evaluation's ``answer_marker_rate`` except for sprays,
which that rate still counts as marked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from r1core.rewards.extract import R1_TAGS, extract_answer
from r1core.rewards.registry import register_reward

_BLOCKS_RE = re.compile(
    r"\s*(?P<open><think>)?(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*",
    re.DOTALL,
)


@dataclass(frozen=True)
class R1FormatConfig:
    """Settings of ``r1_format``.

    Fields:
        allow_missing_think_open: accept responses without the opening ``<think>`` (for chat
            templates whose generation prompt already ends with ``<think>``).
        require_nonempty: the reasoning and the answer must hold non-whitespace text.
    """

    allow_missing_think_open: bool = False
    require_nonempty: bool = True


def format_ok(response: str, config: R1FormatConfig) -> bool:
    """True when ``response`` follows the R1 layout (see the module docstring)."""
    counts = [response.count(tag) for tag in R1_TAGS]
    open_count = counts[0]
    if counts[1:] != [1, 1, 1] or open_count > 1:
        return False
    if open_count == 0 and not config.allow_missing_think_open:
        return False
    match = _BLOCKS_RE.fullmatch(response)
    if match is None:
        return False
    if open_count == 1 and match.group("open") is None:
        return False  # "<think>" somewhere other than the start
    if config.require_nonempty and not (match.group("think").strip() and match.group("answer").strip()):
        return False
    return True


@register_reward("r1_format", config=R1FormatConfig)
def r1_format(
    responses: list[str], golds: list[str], config: R1FormatConfig = R1FormatConfig()
) -> list[float]:
    """1.0 per response in the R1 ``<think>``/``<answer>`` layout, else 0.0 (golds unused).

    Returns a list of floats in {0.0, 1.0}, one per response.
    """
    return [1.0 if format_ok(response, config) else 0.0 for response in responses]


@register_reward("r1_tag_count")
def r1_tag_count(responses: list[str], golds: list[str]) -> list[float]:
    """0.25 per R1 tag present exactly once, counted only while the tags stay in order.

    Returns a list of floats in {0, 0.25, 0.5, 0.75, 1.0}, one per response (golds unused).
    """
    scores = []
    for response in responses:
        score, position = 0.0, 0
        for tag in R1_TAGS:
            if response.count(tag) != 1:
                continue
            index = response.find(tag)
            if index < position:
                continue
            score += 0.25
            position = index + len(tag)
        scores.append(score)
    return scores


#: The final-answer markers of :mod:`r1core.rewards.extract`.
ANSWER_MARKERS = ("boxed", "answer_tag", "hash")


@dataclass(frozen=True)
class AnswerMarkerConfig:
    """Settings of ``answer_marker``.

    Fields:
        markers: the marker kinds that count, among ``"boxed"``, ``"answer_tag"`` and
            ``"hash"`` (the first kind present in the answer region decides).
        max_distinct_answers: more distinct candidates than this is a spray and earns
            nothing, as in ``math_accuracy``.
    """

    markers: tuple[str, ...] = ANSWER_MARKERS
    max_distinct_answers: int = 3

    def __post_init__(self) -> None:
        unknown = sorted(set(self.markers) - set(ANSWER_MARKERS))
        if unknown or not self.markers:
            raise ValueError(f"answer_marker: markers must be a non-empty subset of {ANSWER_MARKERS}, got "
                             f"{tuple(self.markers)}")
        object.__setattr__(self, "markers", tuple(self.markers))
        if self.max_distinct_answers < 1:
            raise ValueError(f"answer_marker: max_distinct_answers must be >= 1, got {self.max_distinct_answers}")


def marks_answer(response: str, config: AnswerMarkerConfig) -> bool:
    """True when ``response`` marks a final answer (see the module docstring)."""
    extracted = extract_answer(response)
    return (extracted.final is not None and extracted.kind in config.markers
            and extracted.num_distinct <= config.max_distinct_answers)


@register_reward("answer_marker", config=AnswerMarkerConfig)
def answer_marker(
    responses: list[str], golds: list[str], config: AnswerMarkerConfig = AnswerMarkerConfig()
) -> list[float]:
    """1.0 per response that marks a final answer, else 0.0 (golds unused).

    Returns a list of floats in {0.0, 1.0}, one per response.
    """
    return [1.0 if marks_answer(response, config) else 0.0 for response in responses]
