"""A checkpoint's tokenizer, the tokens that end a response, and the response decoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from r1core._extras import require


def load_tokenizer(path: str | Path):
    """The tokenizer saved in ``path``.

    A tokenizer saved from a bare ``tokenizers`` object (as :func:`train_tokenizer` does)
    must be loaded as such: transformers' ``AutoTokenizer`` picks the tokenizer class of the
    model type (``Qwen2Tokenizer`` for a Qwen2 config), which rebuilds its own
    pre-tokenizer and encodes the same text differently. Everything else goes through
    ``AutoTokenizer``.
    """
    transformers = require("transformers", extra="policy", feature="loading a tokenizer")
    config_path = Path(path) / "tokenizer_config.json"
    if config_path.is_file():
        tokenizer_class = json.loads(config_path.read_text()).get("tokenizer_class")
        if tokenizer_class in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            return transformers.PreTrainedTokenizerFast.from_pretrained(path)
    return transformers.AutoTokenizer.from_pretrained(path)




def _config_eos_ids(hf_dir: str | Path) -> set[int]:
    ids: set[int] = set()
    for file_name in ("generation_config.json", "config.json"):
        path = Path(hf_dir) / file_name
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            if value is not None:
                ids.update([value] if isinstance(value, int) else value)
    return ids


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the tokenizer's chat template closes an assistant turn with
    (``<|im_end|>`` in ChatML, ``<|eot_id|>`` in Llama 3), or None (no chat template, or the
    turn ends in plain text). Found by rendering a short conversation and reading the token
    that follows the assistant's words, so no template is special-cased."""
    if getattr(tokenizer, "chat_template", None) is None:
        return None
    marker = "r1core-end-of-turn-probe"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    after = text.rfind(marker)
    if after < 0:
        return None
    ids = tokenizer.encode(text[after + len(marker):], add_special_tokens=False)
    special = set(tokenizer.all_special_ids) | {
        token_id for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special
    }
    return ids[0] if ids and ids[0] in special else None


def stop_token_ids(tokenizer: Any, hf_dir: str | Path | None = None, *, chat: bool = False) -> list[int]:
    """Token ids that end a response: the tokenizer's EOS, the EOS ids of the checkpoint's
    ``generation_config.json`` and ``config.json``, and with ``chat`` the chat template's
    end-of-turn token (:func:`end_of_turn_id`). Sorted, without repeats."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if hf_dir is not None:
        ids |= _config_eos_ids(hf_dir)
    if chat:
        turn = end_of_turn_id(tokenizer)
        if turn is not None:
            ids.add(turn)
    return sorted(ids)


class ResponseDecoder:
    """Token ids of a response -> its text, the one decoder of training and evaluation.

    Stop tokens are dropped; every other special token is kept, so the R1 tags (single
    special tokens in the embedded tokenizer) stay in the text the rewards and the answer
    extraction read.
    """

    def __init__(self, tokenizer: Any, stop_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = frozenset(int(i) for i in stop_ids)

    def __call__(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i not in self.stop_ids], skip_special_tokens=False)
