import pytest

from r1core.data import data_dir


@pytest.fixture(scope="session")
def shared_data():
    """The shipped benchmark folder; its absence is a packaging error, not a reason to skip."""
    root = data_dir()
    if not (root / "gsm8k" / "test.jsonl").is_file():
        pytest.fail(f"benchmark data not found at {root}; the package data was not installed")
    return root


CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def chatml_tokenizer():
    """Build a BPE tokenizer trained locally on a corpus (R1 tags as special tokens) with
    ChatML turns as its chat template: ``chatml_tokenizer(corpus, folder, vocab_size)``."""
    from r1core.trainer.embedded import train_tokenizer

    def build(corpus: list[str], folder, vocab_size: int):
        tokenizer = train_tokenizer(corpus, folder, vocab_size=vocab_size)
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tokenizer.chat_template = CHATML
        return tokenizer

    return build
