"""The tokenizer and the small random-initialised model the embedded default run builds
(the run's ``embedded`` section).

No machine here reaches a model hub, so the embedded run makes its own: a tokenizer trained
on the task's text with the ``tokenizers`` library (digits kept as single characters, the R1
tags as single special tokens) and a Qwen2-style model written with transformers'
``save_pretrained``, which the Megatron policy loads and vLLM serves like any checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from r1core._extras import require
from r1core.rewards.extract import R1_TAGS

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


@dataclass
class EmbeddedModelConfig:
    """The embedded run's model (Qwen2 architecture): the settings :func:`make_tiny_qwen2`
    writes into its ``config.json``, which is then read like any checkpoint's."""

    hidden_size: int = 128
    """Model width."""
    num_layers: int = 4
    """Decoder layers."""
    num_attention_heads: int = 4
    """Query heads."""
    num_key_value_heads: int = 2
    """Key/value heads (grouped-query attention)."""
    intermediate_size: int = 384
    """SwiGLU inner width."""
    max_position_embeddings: int = 512
    """Longest prompt + response."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the LM head, as small Qwen2 models do."""
    seed: int = 0
    """Seed of the random initialisation."""

    def __post_init__(self) -> None:
        for key in ("hidden_size", "num_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                    "max_position_embeddings"):
            if getattr(self, key) < 1:
                raise ValueError(f"embedded.model.{key} must be >= 1, got {getattr(self, key)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"embedded.model.hidden_size={self.hidden_size} is not divisible by "
                             f"embedded.model.num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"embedded.model.num_attention_heads={self.num_attention_heads} is not divisible by "
                             f"embedded.model.num_key_value_heads={self.num_key_value_heads}")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(f"embedded.model: head size hidden_size / num_attention_heads = "
                             f"{self.hidden_size // self.num_attention_heads} must be even (rotary embeddings)")


@dataclass
class EmbeddedConfig:
    """The tokenizer and model the embedded default run builds for itself."""

    vocab_size: int = 96
    """Target BPE vocabulary (special tokens and single digits included)."""
    model: EmbeddedModelConfig = field(default_factory=EmbeddedModelConfig)
    """Shape of the random-initialised Qwen2 model."""

    def __post_init__(self) -> None:
        if self.vocab_size < 1:
            raise ValueError(f"embedded.vocab_size must be >= 1, got {self.vocab_size}")


def train_tokenizer(corpus: Iterable[str], out_dir: str | Path, *, vocab_size: int = 256):
    """Train a small BPE tokenizer on ``corpus`` and save it (``tokenizer.json`` and the
    transformers files) to ``out_dir``. Returns the ``PreTrainedTokenizerFast``.

    Digits are split individually before BPE so numbers are spelled digit by digit, which is
    what small models need to learn arithmetic.
    """
    tokenizers = require("tokenizers", extra="policy", feature="the embedded run's tokenizer")
    transformers = require("transformers", extra="policy", feature="the embedded run's tokenizer")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    # Spaces become "▁" and start a new piece; then every digit is its own piece.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(prepend_scheme="never"), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="never")
    # The R1 format tags become single tokens, so "did the model close its think block" is
    # one decision rather than a spelling exercise.
    special = [EOS_TOKEN, PAD_TOKEN, *R1_TAGS]
    # Every printable ASCII character is in the base alphabet, so text the corpus never
    # showed (a digit absent from the training problems) still encodes.
    alphabet = [chr(c) for c in range(32, 127)] + ["\u2581", "\n"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, additional_special_tokens=list(R1_TAGS)
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def make_tiny_qwen2(out_dir: str | Path, tokenizer, config: EmbeddedModelConfig | None = None) -> Path:
    """Write a random-initialised Qwen2 checkpoint (fp32 safetensors + config + tokenizer)
    sized for ``tokenizer``'s vocabulary to ``out_dir``; return ``out_dir``."""
    config = config or EmbeddedModelConfig()
    transformers = require("transformers", extra="policy", feature="the embedded run's model")
    import torch

    hf_config = transformers.Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(config.seed)
    model = transformers.Qwen2ForCausalLM(hf_config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
