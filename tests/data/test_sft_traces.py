"""SFT traces in their three row forms (as written, a problem through the run's template, a
chat conversation), each ending with the token that stops generation."""

from __future__ import annotations

import json

import pytest

from r1core.commands.prompting import prompting
from r1core.commands.sft import load_sft_examples
from r1core.data.config import DataConfig
from r1core.data.records import DataFormatError

@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, chatml_tokenizer):
    corpus = ["user assistant system 3+4=? <think>3+4=7</think><answer>7</answer>"] * 4
    return chatml_tokenizer(corpus, tmp_path_factory.mktemp("tok"), vocab_size=120)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_three_row_forms(tokenizer, tmp_path):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = tokenizer.eos_token_id
    path = write(tmp_path / "traces.jsonl", [
        {"prompt": "3+4=?\n<think>", "response": "3+4=7</think><answer>7</answer>"},
        {"problem": "3+4=?", "response": "<think>3+4=7</think><answer>7</answer>", "system": "Think."},
        {"messages": [{"role": "user", "content": "3+4=?"}, {"role": "assistant", "content": "<answer>7</answer>"}]},
    ])
    chat = prompting(DataConfig(template="chat"), tokenizer, None)
    as_written, templated, conversation = load_sft_examples(path, tokenizer, chat)
    assert tokenizer.decode(as_written[0]) == "3+4=?\n<think>" and as_written[1][-1] == eos
    assert tokenizer.decode(templated[0], skip_special_tokens=False) == (
        "<|im_start|>system\nThink.<|im_end|>\n<|im_start|>user\n3+4=?<|im_end|>\n<|im_start|>assistant\n")
    assert templated[1][-1] == im_end and conversation[1][-1] == im_end
    assert tokenizer.decode(conversation[1][:-1], skip_special_tokens=False) == "<answer>7</answer>"
    # With a plain template the problem is rendered by it and the response ends with EOS.
    raw = prompting(DataConfig(template="raw", instruction="Show work."), tokenizer, None)
    _, plain, _ = load_sft_examples(path, tokenizer, raw)
    assert tokenizer.decode(plain[0]) == "3+4=?\nShow work." and plain[1][-1] == eos


def test_long_traces_are_skipped_and_counted(tokenizer, tmp_path):
    path = write(tmp_path / "traces.jsonl", [{"prompt": "3+4=?", "response": "7"},
                                              {"prompt": "3+4=? " * 30, "response": "7"}])
    notes = []
    examples = load_sft_examples(path, tokenizer, prompting(DataConfig(), tokenizer, None), max_tokens=20,
                                 log=notes.append)
    assert len(examples) == 1 and notes == ["skipped 1 of 2 traces longer than the model's 20 positions"]
    with pytest.raises(DataFormatError, match="every trace is longer"):
        load_sft_examples(path, tokenizer, prompting(DataConfig(), tokenizer, None), max_tokens=3)


@pytest.mark.parametrize(
    "row,message",
    [
        ({"prompt": "q"}, "field 'response' must be a non-empty string"),
        ({"text": "q"}, "a trace needs 'prompt' and 'response'"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "r"}]}, "must be the assistant's"),
        ({"messages": "hi"}, "field 'messages' must be a list"),
    ],
)
def test_bad_traces_name_file_and_row(tokenizer, tmp_path, row, message):
    path = write(tmp_path / "bad.jsonl", [{"prompt": "q", "response": "r"}, row])
    with pytest.raises(DataFormatError, match=f"{path}:2: .*{message}"):
        load_sft_examples(path, tokenizer, prompting(DataConfig(), tokenizer, None))
