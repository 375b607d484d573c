"""Tokenizers: GPT-2's byte-level BPE (local copy or hub), a local tokenizer folder/file, or a BPE trained here.

    pytest tests/trainer/test_tokenizer.py

Specs: `gpt2` (from `$GPTSWEEP_DATA_DIR/gpt2_tokenizer/` when it exists, else the hub), a folder holding
tokenizer.json or vocab.json + merges.txt, a path to a tokenizer.json, or `bpe:N` (trained on the corpus).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from trainer.config import ConfigError
from trainer.sources import local_copy, require_hub

EOS = "<|endoftext|>"
_EOS_NAMES = (EOS, "</s>", "<eos>", "<|end_of_text|>")  # what other local tokenizers call their end of text
_MIN_BPE = 257  # the 256 byte tokens plus EOS


class TextTokenizer:
    """A `tokenizers.Tokenizer` with its EOS id and vocabulary size; picklable, for Ray workers."""

    def __init__(self, backend: Tokenizer, spec: str):
        backend.no_truncation()
        backend.no_padding()
        self._backend, self.spec = backend, spec
        # The embedding must cover the largest id, which can exceed the count when ids have gaps.
        self.vocab_size = max(backend.get_vocab(with_added_tokens=True).values()) + 1
        eos = [backend.token_to_id(name) for name in _EOS_NAMES if backend.token_to_id(name) is not None]
        if not eos:
            raise ConfigError(f"tokenizer '{spec}' has no end-of-text token ({EOS}); use a tokenizer that defines "
                              "one, e.g. gpt2 or bpe:8192")
        self.eos_id = eos[0]

    @classmethod
    def from_json(cls, text: str, spec: str) -> TextTokenizer:
        return cls(Tokenizer.from_str(text), spec)

    def encode(self, text: str) -> list[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Parallel in Rust; `_fast` skips the offsets we never use."""
        return [e.ids for e in self._backend.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_json(self) -> str:
        return self._backend.to_str()

    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes of text each token id stands for (int64, vocab_size long), so that the bytes of any token
        sequence are a sum and bits per byte need no decoding. Special tokens (EOS) stand for no text: 0.

        Byte-level BPE (gpt2, bpe:N) is exact: each character of a token's string is one byte. Other decoders
        get the length of the token decoded alone, exact for whole-character tokens."""
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        byte_level = isinstance(self._backend.decoder, decoders.ByteLevel)
        for token, i in self._backend.get_vocab(with_added_tokens=False).items():
            lengths[i] = len(token) if byte_level else len(self._backend.decode([i]).encode("utf-8"))
        for i, added in self._backend.get_added_tokens_decoder().items():
            lengths[i] = 0 if added.special else len(added.content.encode("utf-8"))
        return lengths


def bpe_size(spec: str) -> int | None:
    """N for a `bpe:N` spec, None for any other spec."""
    if not spec.startswith("bpe:"):
        return None
    try:
        n = int(spec[4:])
    except ValueError:
        raise ConfigError(f"tokenizer '{spec}': N in bpe:N must be an integer; use e.g. bpe:8192") from None
    if n < _MIN_BPE:
        raise ConfigError(f"tokenizer '{spec}': N must be at least {_MIN_BPE} (256 bytes + {EOS}); "
                          "use e.g. bpe:8192")
    return n


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A GPT-2-style byte-level BPE with EOS as its only special token; the same texts give the same merges."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer=trainer)
    return backend


def _from_vocab_merges(folder: Path) -> Tokenizer:
    """GPT-2's original file pair, assembled as Hugging Face's gpt2 tokenizer.json is."""
    backend = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=True)
    if backend.token_to_id(EOS) is not None:  # so that EOS in text is one token, never split into bytes
        backend.add_special_tokens([AddedToken(EOS, special=True)])
    return backend


def _from_path(path: Path, spec: str) -> Tokenizer:
    try:
        if path.is_dir() and (path / "tokenizer.json").is_file():
            return Tokenizer.from_file(str(path / "tokenizer.json"))
        if path.is_dir() and (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return _from_vocab_merges(path)
        if path.is_file():
            return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a bare Exception for malformed files
        raise ConfigError(f"cannot read tokenizer {path}: {e}; pass a valid tokenizer.json or vocab.json + "
                          "merges.txt") from None
    if path.is_dir():
        raise ConfigError(f"tokenizer folder {path} has neither tokenizer.json nor vocab.json + merges.txt; "
                          "pass a folder holding them")
    raise ConfigError(f"tokenizer '{spec}' is not gpt2, bpe:N or an existing tokenizer folder/tokenizer.json; "
                      "pass one of those")


def load_tokenizer(spec: str, training_texts: Iterable[str] | None = None) -> TextTokenizer:
    """The tokenizer `spec` names; `bpe:N` is trained on `training_texts`."""
    n = bpe_size(spec)
    if n is not None:
        if training_texts is None:
            raise ConfigError(f"tokenizer '{spec}' is trained on the corpus; load it through prepare_corpus")
        return TextTokenizer(train_bpe(training_texts, n), spec)
    if spec == "gpt2":
        folder = local_copy("gpt2_tokenizer")
        if folder is None:
            require_hub("tokenizer 'gpt2'", datasets=False)
            from transformers import AutoTokenizer  # imported late: it takes seconds and is needed only here

            return TextTokenizer(AutoTokenizer.from_pretrained("gpt2").backend_tokenizer, spec)
        return TextTokenizer(_from_path(folder, spec), spec)
    return TextTokenizer(_from_path(Path(spec).expanduser(), spec), spec)
