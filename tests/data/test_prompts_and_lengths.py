"""Prompts for real models: the chat template with a system prompt and an instruction, raw
prompts, stop tokens from the tokenizer and generation_config.json, the one response
decoder, and the length plan that fits the engine to the prompts (skipping, never failing
on, a prompt that is too long)."""

from __future__ import annotations

import json

import pytest

from r1core.data.prompts import encode_problems, plan_lengths
from r1core.data.records import Problem
from r1core.data.templates import ChatTemplate, build_template
from r1core.data.tokenizers import ResponseDecoder, end_of_turn_id, stop_token_ids

@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory, chatml_tokenizer):
    """A locally trained BPE tokenizer (R1 tags as special tokens) with ChatML turns."""
    corpus = ["user assistant system What is 2+3? Think step by step. <think>5</think><answer>5</answer>"] * 4
    return chatml_tokenizer(corpus, tmp_path_factory.mktemp("tok"), vocab_size=160)


def test_chat_template_with_system_prompt_instruction_and_row_system(chat_tokenizer):
    template = build_template("chat", tokenizer=chat_tokenizer, system="Think.", instruction="Box it.")
    assert isinstance(template, ChatTemplate)
    assert template("What is 2+3? ") == ("<|im_start|>system\nThink.<|im_end|>\n<|im_start|>user\nWhat is 2+3?\nBox it."
                                         "<|im_end|>\n<|im_start|>assistant\n")
    # A row's own system prompt replaces the configured one.
    assert template("q", system="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert build_template("chat", tokenizer=chat_tokenizer)("q").startswith("<|im_start|>user\nq")


def test_raw_and_r1_zero_take_the_instruction_and_refuse_a_system_prompt():
    assert build_template("raw", instruction="Answer in <answer> tags.")(" 3+4=? ") == "3+4=?\nAnswer in <answer> tags."
    assert build_template("raw")("3+4=?") == "3+4=?"
    assert build_template("r1-zero", instruction="Be exact.")("What is 1+1?").endswith("User: What is 1+1?\nBe exact. Assistant:")
    with pytest.raises(ValueError, match="chat template only"):
        build_template("raw", system="x")
    with pytest.raises(ValueError, match="compact template"):
        build_template("compact", instruction="x")


def test_stop_tokens_come_from_tokenizer_generation_config_and_chat_turns(chat_tokenizer, tmp_path):
    im_end = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = chat_tokenizer.eos_token_id
    assert end_of_turn_id(chat_tokenizer) == im_end
    assert stop_token_ids(chat_tokenizer) == [eos]
    assert stop_token_ids(chat_tokenizer, chat=True) == sorted({eos, im_end})
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, 7]}))
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 9}))
    assert stop_token_ids(chat_tokenizer, tmp_path) == sorted({eos, 7, 9})


def test_decoder_drops_stop_tokens_and_keeps_the_r1_tags(chat_tokenizer):
    im_end = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = chat_tokenizer.encode("<think>5</think><answer>5</answer>", add_special_tokens=False)
    decode = ResponseDecoder(chat_tokenizer, [im_end, chat_tokenizer.eos_token_id])
    assert decode(ids + [im_end]) == "<think>5</think><answer>5</answer>"
    # skip_special_tokens=True (what the evaluation used to do) loses the tags and the answer.
    assert "<answer>" not in chat_tokenizer.decode(ids, skip_special_tokens=True)


def test_encoding_adds_no_special_tokens_to_chat_prompts(chat_tokenizer):
    problems = [Problem("a", "What is 2+3?", "5"), Problem("b", "What is 2+3? " * 6, "5", system="Be brief.")]
    encoded = encode_problems(problems, build_template("chat", tokenizer=chat_tokenizer), chat_tokenizer)
    assert encoded.tokens[0] == chat_tokenizer.encode(encoded.texts[0], add_special_tokens=False)
    assert "Be brief." in encoded.texts[1]
    kept, skipped = encoded.within(len(encoded.tokens[0]))
    assert skipped == 1 and [p.id for p in kept.problems] == ["a"] and kept.longest == len(encoded.tokens[0])


def test_length_plan():
    # Enough room: the configured engine length stays, every prompt fits.
    plan = plan_lengths(longest_prompt=30, response_budget=48, configured_max_model_len=256, model_positions=512)
    assert (plan.prompt_budget, plan.max_model_len, plan.note) == (30, 256, None)
    # Real-model prompts: the engine grows to prompt + response, with a note saying so.
    plan = plan_lengths(longest_prompt=219, response_budget=512, configured_max_model_len=256, model_positions=8192)
    assert (plan.prompt_budget, plan.max_model_len) == (219, 731) and "raised from 256 to 731" in plan.note
    # The model's positions cap both: prompts beyond what is left are cut (skipped later).
    plan = plan_lengths(longest_prompt=900, response_budget=200, configured_max_model_len=256, model_positions=1024)
    assert (plan.prompt_budget, plan.max_model_len) == (824, 1024) and "prompts are cut at 824" in plan.note
    # An explicit prompt budget wins over the longest prompt.
    plan = plan_lengths(longest_prompt=900, response_budget=100, configured_max_model_len=64, model_positions=None,
                        max_prompt_tokens=300)
    assert (plan.prompt_budget, plan.max_model_len) == (300, 400)
    with pytest.raises(ValueError, match="leaves no room for a prompt in the model's 512 positions"):
        plan_lengths(longest_prompt=10, response_budget=512, configured_max_model_len=256, model_positions=512)
