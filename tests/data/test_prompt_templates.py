"""Prompt templates, including chat mode through a real (locally built) tokenizer."""

import pytest

from r1core.data import TEMPLATES, get_template
from r1core.rewards.extract import THINK_OPEN, final_answer_tag
from r1core.rewards.format import R1FormatConfig, format_ok


def test_r1_zero_template():
    prompt = get_template("r1-zero")("Compute 2+3")
    assert prompt.startswith("A conversation between User and Assistant.")
    assert "<think> </think>" in prompt and "<answer> </answer>" in prompt
    assert prompt.endswith("User: Compute 2+3. Assistant:")
    assert get_template("r1-zero")("What is 2+3?").endswith("User: What is 2+3? Assistant:")
    with pytest.raises(ValueError, match="placeholder"):
        get_template("r1-zero", template="no slot")


def test_compact_template_and_registry():
    assert get_template("compact")("3+4=?") == "3+4=?\n<think>"
    assert TEMPLATES.names() == ["chat", "compact", "r1-zero", "raw"]
    with pytest.raises(KeyError, match="valid: chat, compact, r1-zero"):
        get_template("alpaca")


def test_chat_template_through_a_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hello": 1}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    template = get_template("chat", tokenizer=tokenizer, system="Be brief.", instruction="Answer in \\boxed{}.")
    assert template("1+1?") == "<|system|>Be brief.\n<|user|>1+1?\nAnswer in \\boxed{}.\n<|assistant|>"
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        get_template("chat", tokenizer=tokenizer)
    with pytest.raises(TypeError, match="apply_chat_template"):
        get_template("chat", tokenizer=object())


def test_compact_template_ends_in_the_r1_think_tag():
    """The compact prompt opens the think block; a response that closes it and answers is in
    the R1 format that the format reward checks (with the opening tag in the prompt)."""
    prompt = get_template("compact")("1+1=?")
    assert prompt == "1+1=?\n" + THINK_OPEN
    assert format_ok("a</think><answer>4</answer>", R1FormatConfig(allow_missing_think_open=True))
    assert final_answer_tag("<answer>1</answer> then <answer> 2 </answer>") == "2"
