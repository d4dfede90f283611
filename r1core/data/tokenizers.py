"""Loading a checkpoint's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

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


