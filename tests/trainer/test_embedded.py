"""The embedded run's tokenizer and model are real Hugging Face artefacts."""

import pytest
import torch

pytest.importorskip("transformers")

from r1core.data.tokenizers import load_tokenizer
from r1core.rewards.extract import R1_TAGS
from r1core.trainer.embedded import EmbeddedModelConfig, make_tiny_qwen2, train_tokenizer

CORPUS = [
    "<think>12 + 7 = 19, 19 * 3 = 57</think><answer>57</answer>",
    "What is (12 + 7) * 3? Show your work.",
    "<think>40 - 13 = 27</think><answer>27</answer>",
] * 20


def test_tokenizer_round_trips_and_keeps_tags_and_digits_whole(tmp_path):
    tokenizer = train_tokenizer(CORPUS, tmp_path / "tok", vocab_size=140)
    text = "<think>123 + 45 = 168</think><answer>168</answer>"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    for tag in R1_TAGS:
        assert len(tokenizer.encode(tag)) == 1
    digits = [tokenizer.decode([i]) for i in tokenizer.encode("9876")]
    assert "".join(digits).strip() == "9876" and all(len(d.strip()) <= 1 for d in digits)


def test_tiny_model_loads_back_with_transformers(tmp_path):
    import transformers

    tokenizer = train_tokenizer(CORPUS, tmp_path / "tok", vocab_size=140)
    out = make_tiny_qwen2(tmp_path / "model", tokenizer, EmbeddedModelConfig(hidden_size=32, num_layers=1, intermediate_size=64))
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.tie_word_embeddings
    loaded = load_tokenizer(out)
    text = "3+4-2=?\n<think>"
    assert loaded.encode(text) == tokenizer.encode(text)  # AutoTokenizer would drop the newline
    ids = torch.tensor([loaded.encode("<think>1 + 1 = 2</think>")])
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
