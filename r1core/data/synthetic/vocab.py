"""A compact vocabulary for the synthetic tasks: every character their prompts, traces and
answers use, plus the four R1 tags as single tokens.

Tiny models trained from scratch on CPU learn faster with few symbols and short
sequences; making each tag one token shortens every trace by ~30 characters.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from r1core.data.templates import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
TAG_TOKENS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
# Characters of the synthetic prompts ("3+4*2-5=?", "make 7 from 3 4 5"), traces and answers.
SYNTHETIC_CHARS = "0123456789+-*/()=?,: \nmakefro"


class CharTokenizer:
    """Character-level tokenizer with multi-character atomic tokens (the tags).

    Ids: the special tokens first (``<pad>`` = 0), then ``tokens`` (matched longest first),
    then the characters of ``chars``. Unknown characters raise ``ValueError`` naming them.
    """

    def __init__(self, chars: str = SYNTHETIC_CHARS, tokens: Sequence[str] = TAG_TOKENS) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not repeat")
        self.vocab: list[str] = [*SPECIAL_TOKENS, *tokens, *chars]
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("special tokens, tokens and chars overlap")
        self.index = {token: i for i, token in enumerate(self.vocab)}
        self._multi = sorted(tokens, key=len, reverse=True)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self.index["<pad>"]

    @property
    def bos_id(self) -> int:
        return self.index["<bos>"]

    @property
    def eos_id(self) -> int:
        return self.index["<eos>"]

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = [self.bos_id] if add_bos else []
        position = 0
        while position < len(text):
            for token in self._multi:
                if text.startswith(token, position):
                    ids.append(self.index[token])
                    position += len(token)
                    break
            else:
                char = text[position]
                if char not in self.index:
                    raise ValueError(f"character {char!r} at position {position} is not in the vocabulary")
                ids.append(self.index[char])
                position += 1
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        special = set(range(len(SPECIAL_TOKENS)))
        out = []
        for i in ids:
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"token id {i} outside the vocabulary of {len(self.vocab)}")
            if skip_special and i in special:
                continue
            out.append(self.vocab[i])
        return "".join(out)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (``CharTokenizer.load`` reads it back)."""
        n_special = len(SPECIAL_TOKENS)
        tokens = [t for t in self.vocab[n_special:] if len(t) > 1]
        chars = "".join(t for t in self.vocab[n_special:] if len(t) == 1)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"chars": chars, "tokens": tokens}, handle)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return cls(data["chars"], data["tokens"])
