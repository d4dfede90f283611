"""R1 format, tag count, answer marker, length and language-consistency rewards on hand-computed cases."""

from __future__ import annotations

import pytest

from r1core.rewards import (
    AnswerMarkerConfig,
    LanguageConsistencyConfig,
    answer_marker,
    get_reward,
    language_consistency,
    length_penalty,
    overlong_penalty,
    r1_format,
    r1_tag_count,
)
from r1core.rewards.language import script_units

GOOD = "<think>\nadd them\n</think>\n<answer>\n4\n</answer>"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (GOOD, 1.0),
        ("  " + GOOD + "\n", 1.0),
        ("<think>a</think><answer>b</answer>", 1.0),
        ("<think>a</think>text between<answer>b</answer>", 0.0),
        ("<think>a</think><answer>b</answer> trailing text", 0.0),
        ("preamble <think>a</think><answer>b</answer>", 0.0),
        ("<think>a</think><answer>b</answer><answer>c</answer>", 0.0),
        ("<think>a</think><think>b</think><answer>c</answer>", 0.0),
        ("<answer>b</answer><think>a</think>", 0.0),
        ("<think> </think><answer>b</answer>", 0.0),  # empty reasoning
        ("<think>a</think><answer>  </answer>", 0.0),  # empty answer
        ("a</think><answer>b</answer>", 0.0),  # no opening tag (not allowed by default)
        ("<think>a</think>", 0.0),
        ("", 0.0),
    ],
)
def test_r1_format(response, expected):
    assert r1_format([response], [""]) == [expected]


def test_r1_format_missing_open_think_allowed_by_config():
    reward = get_reward("r1_format", allow_missing_think_open=True)
    assert reward(["a</think><answer>b</answer>", GOOD], ["", ""]) == [1.0, 1.0]


def test_r1_tag_count():
    assert r1_tag_count(
        [GOOD, "<think>a</think>", "<answer>b</answer><think>a</think>", "x", "<think><think></think>"],
        [""] * 5,
    ) == [1.0, 0.5, 0.5, 0.0, 0.25]


def test_answer_marker():
    responses = [
        "so the sum is \\boxed{12}",
        GOOD,                                   # <answer> tags
        "48 - 6 = 42\n#### 42",
        "the answer is 12",                     # no marker
        "I will put it within \\boxed{}.",      # the instruction copied: empty box
        "<think>\\boxed{3}</think> no answer",  # boxed only inside the reasoning
        "\\boxed{1} \\boxed{2} \\boxed{3} \\boxed{4}",  # a spray of guesses
        "\\boxed{5",                            # truncated box
    ]
    assert answer_marker(responses, [""] * len(responses)) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    boxed_only = get_reward("answer_marker", markers=["boxed"], max_distinct_answers=4)
    assert boxed_only(responses, [""] * len(responses)) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="markers must be a non-empty subset"):
        AnswerMarkerConfig(markers=("box",))


def test_overlong_penalty_matches_dapo_formula():
    # L_max = 100, L_cache = 20: 0 up to 80, linear to -1 at 100, -1 beyond.
    reward = get_reward("overlong_penalty", max_length=100, buffer=20, penalty=1.0)
    lengths = [0, 80, 81, 90, 100, 101, 500]
    scores = reward(["a" * n for n in lengths], [""] * len(lengths))
    assert scores == pytest.approx([0.0, 0.0, -0.05, -0.5, -1.0, -1.0, -1.0])
    assert overlong_penalty(["short"], [""]) == [0.0]
    words = get_reward("overlong_penalty", max_length=4, buffer=2, unit="words")
    assert words(["one two three", "a b c d e"], ["", ""]) == pytest.approx([-0.5, -1.0])
    with pytest.raises(ValueError, match="buffer"):
        get_reward("overlong_penalty", max_length=10, buffer=20)


def test_length_penalty_is_linear_and_clipped():
    reward = get_reward("length_penalty", max_length=110, free_length=10, penalty=0.5)
    scores = reward(["a" * n for n in (0, 10, 60, 110, 1000)], [""] * 5)
    assert scores == pytest.approx([0.0, 0.0, -0.25, -0.5, -0.5])
    assert length_penalty(["x" * 4096], [""]) == [-1.0]


def test_token_length_needs_a_tokenizer_file():
    with pytest.raises(ValueError, match="tokenizer_path"):
        get_reward("overlong_penalty", unit="tokens")(["a"], [""])


def test_token_length_with_a_local_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "a": 1, "b": 2}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    reward = get_reward("overlong_penalty", max_length=4, buffer=2, unit="tokens", tokenizer_path=str(path))
    assert reward(["a b", "a b a", "a b a b a"], [""] * 3) == pytest.approx([0.0, -0.5, -1.0])


def test_script_units_rules():
    # Latin words of 2+ letters, Han per character, math and LaTeX commands removed,
    # single letters (variables) skipped.
    assert script_units("The value of x is 设 的值 $\\frac{a}{b}$ \\alpha") == {"latin": 4, "han": 3}
    assert script_units("ひらがな カタカナ 한국어 русский") == {"hiragana": 4, "katakana": 4, "hangul": 1, "cyrillic": 1}
    assert script_units("123 + 456 = 579") == {}


def test_language_consistency():
    zh = get_reward("language_consistency", target_language="zh")
    mixed = "<think>我们计算 x 的值 and then</think><answer>5</answer>"  # han 6, latin 2
    assert zh([mixed], [""]) == [pytest.approx(0.75)]
    assert language_consistency([mixed], [""]) == [pytest.approx(0.25)]
    assert language_consistency(["<think>all english words here</think> 答案"], [""]) == [1.0]
    # No </think>: 0, unless the whole response is to be measured.
    assert language_consistency(["plain english answer"], [""]) == [0.0]
    whole = get_reward("language_consistency", whole_response_without_think=True)
    assert whole(["plain english answer"], [""]) == [1.0]
    # Only math in the chain of thought: nothing to measure, 0.
    assert language_consistency(["<think>$1+1=2$</think>2"], [""]) == [0.0]
    ja = LanguageConsistencyConfig(target_language="ja")
    assert language_consistency(["<think>これは漢字です</think>"], [""], ja) == [1.0]
    with pytest.raises(ValueError, match="valid"):
        LanguageConsistencyConfig(target_language="klingon")
