"""Token data for one run: the corpus and its on-disk token cache, packing, batches, fine-tuning tables.

    pytest tests/trainer/test_data.py

Documents are tokenized once, each followed by one EOS, and saved under `cache_dir()/<key>/`; the key hashes
everything the tokens depend on, so a second run (or every Ray trial) memory-maps the arrays and tokenizes nothing.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from trainer import token_cache
from trainer.config import ConfigError, DataConfig
from trainer.sources import available_splits, read_classification, read_documents, split_files
from trainer.tokenizer import TextTokenizer, bpe_size, load_tokenizer

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 2  # bump when document splitting or the cache layout changes: old caches then miss
# One encode_batch call takes at most this many documents and characters: enough for the Rust side's threads, and
# memory stays flat. A corpus of 99 books (67.6 MB) in one call held all its 20M tokens as Python ints at once:
# 2.8 GB resident; in slices of 4M characters the whole build (bpe:4096 trained, then tokenized) peaks at 1.1 GB.
_ENCODE_BATCH = 1024
_ENCODE_CHARS = 4_000_000


@dataclass
class Corpus:
    train: np.ndarray  # 1-D token ids, memory-mapped from the cache
    val: np.ndarray
    vocab_size: int
    eos_id: int
    summary: str  # one line: which files, how many documents/tokens went where, cache hit or not


@dataclass
class FinetuneData:
    train_ids: np.ndarray  # (n, max_length) int64, right-padded with EOS
    train_lengths: np.ndarray  # real tokens per row, >= 1
    train_labels: np.ndarray  # int64, 0..3
    test_ids: np.ndarray
    test_lengths: np.ndarray
    test_labels: np.ndarray


def cache_dir() -> Path:
    return Path(os.environ.get("GPTSWEEP_CACHE_DIR") or Path.home() / ".cache" / "gptsweep").expanduser()


def token_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def check_length(name: str, n_tokens: int, context_length: int) -> None:
    if n_tokens < context_length + 1:
        raise ConfigError(f"{name} corpus has {n_tokens:,} tokens, fewer than one context window of "
                          f"{context_length + 1}; use a larger corpus or a smaller model.context_length")


def _fingerprint(spec: str, split: str) -> str:
    """File names and contents (streamed, so a multi-GB corpus costs seconds and no memory), or hub id + split."""
    files = split_files(spec, split)
    if files is None:
        return f"hub:{spec}:{split}"
    digest = hashlib.sha256()
    for path in files:
        try:
            digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror or e}; pass a readable file") from None
    return digest.hexdigest()


def _plan(cfg: DataConfig) -> tuple[tuple[str, str], tuple[str, str] | None]:
    """(spec, split) for train and for validation; None: hold out the last documents of train."""
    splits = available_splits(cfg.source)
    # A local copy may lack splits (ours of wikitext-2 has only test): train on what is there.
    train = (cfg.source, next(s for s in ("train", "test", "validation") if s in splits))
    if cfg.val_source:
        val_splits = available_splits(cfg.val_source)
        return train, (cfg.val_source, next(s for s in ("validation", "test", "train") if s in val_splits))
    if "validation" in splits and train[1] != "validation":
        return train, (cfg.source, "validation")
    return train, None


def encode_slices(docs: list[str], max_docs: int, max_chars: int) -> Iterator[list[str]]:
    """Consecutive runs of documents, each within max_docs and max_chars (a longer document goes alone)."""
    batch, chars = [], 0
    for doc in docs:
        if batch and (len(batch) == max_docs or chars + len(doc) > max_chars):
            yield batch
            batch, chars = [], 0
        batch.append(doc)
        chars += len(doc)
    if batch:
        yield batch


def _tokenize(tokenizer: TextTokenizer, docs: list[str]) -> np.ndarray:
    """Documents concatenated, each followed by one EOS."""
    dtype, parts = token_dtype(tokenizer.vocab_size), []
    for batch in encode_slices(docs, _ENCODE_BATCH, _ENCODE_CHARS):
        ids = tokenizer.encode_batch(batch)
        parts.append(np.fromiter(itertools.chain.from_iterable(t + [tokenizer.eos_id] for t in ids), dtype=dtype,
                                 count=sum(len(t) + 1 for t in ids)))
    return np.concatenate(parts)


def _build(root: Path, cfg: DataConfig, train_from: tuple[str, str], val_from: tuple[str, str] | None,
           tokenizer: TextTokenizer | None) -> None:
    """Read, split, tokenize and save into a temporary folder renamed to `root`: a crash never leaves a
    half-written cache under the key, and a concurrent writer's finished copy is as good as ours."""
    train_docs, train_where = read_documents(*train_from)
    if val_from is None:
        if len(train_docs) < 2:
            raise ConfigError(f"{train_where}: one document cannot be split into train and validation; "
                              "pass --val-data or a corpus of several documents")
        # round(): 0.1 * 70 is 7.000000000000001 in floats, and ceil must give 7
        n_val = min(math.ceil(round(cfg.val_fraction * len(train_docs), 9)), len(train_docs) - 1)
        val_docs, train_docs = train_docs[-n_val:], train_docs[:-n_val]
        val_where = f"the last {n_val} of them (held out: val_fraction {cfg.val_fraction})"
        train_where = f"the first {len(train_docs)} of {train_where}"
    else:
        val_docs, val_where = read_documents(*val_from)
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.tokenizer, train_docs)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        meta = {"format": FORMAT_VERSION, "tokenizer": cfg.tokenizer, "vocab_size": tokenizer.vocab_size,
                "eos_id": tokenizer.eos_id}
        for name, docs, where in (("train", train_docs, train_where), ("val", val_docs, val_where)):
            tokens = _tokenize(tokenizer, docs)
            np.save(tmp / f"{name}.npy", tokens)
            meta[name] = {"from": where, "documents": len(docs), "tokens": len(tokens)}
        if bpe_size(cfg.tokenizer):  # the trained tokenizer lives with its tokens, so a rerun need not retrain
            (tmp / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
        token_cache.seal(tmp, meta)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


def prepare_corpus(cfg: DataConfig, context_length: int) -> tuple[Corpus, TextTokenizer]:
    """Train/validation token arrays (from the cache when present) and the tokenizer that made them."""
    train_from, val_from = _plan(cfg)
    trained = bpe_size(cfg.tokenizer) is not None
    tokenizer = None if trained else load_tokenizer(cfg.tokenizer)
    key_parts = {
        "format": FORMAT_VERSION,
        "train": [*train_from, _fingerprint(*train_from)],
        "val": [*val_from, _fingerprint(*val_from)] if val_from else "held out",
        "val_fraction": cfg.val_fraction,
        "tokenizer": cfg.tokenizer,
        # a trained tokenizer is a function of the key's other parts; it is stored in the cache, not hashed
        "tokenizer_json": None if trained else hashlib.sha256(tokenizer.to_json().encode()).hexdigest(),
    }
    root = cache_dir() / hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:32]
    damage = token_cache.damage(root) if root.is_dir() else None
    if damage is not None:
        print(f"token cache {root} failed its check ({damage}); rebuilding it", file=sys.stderr, flush=True)
        shutil.rmtree(root, ignore_errors=True)
    hit = root.is_dir()
    if not hit:
        _build(root, cfg, train_from, val_from, tokenizer)
    meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
    if trained:
        tokenizer = TextTokenizer.from_json((root / "tokenizer.json").read_text(encoding="utf-8"), cfg.tokenizer)
    train, val = (np.load(root / f"{name}.npy", mmap_mode="r") for name in ("train", "val"))
    check_length("training", len(train), context_length)
    check_length("validation", len(val), context_length)
    t, v = meta["train"], meta["val"]
    summary = (f"data: train {t['tokens']:,} tokens, {t['from']}; val {v['tokens']:,} tokens, {v['from']}; "
               f"tokenizer {cfg.tokenizer} (vocab {tokenizer.vocab_size:,}); "
               f"cache {'hit' if hit else 'rebuilt' if damage else 'written'}: {root}")
    return Corpus(train, val, tokenizer.vocab_size, tokenizer.eos_id, summary), tokenizer


def pack(tokens: np.ndarray, context_length: int) -> np.ndarray:
    """(n_chunks, context_length + 1) non-overlapping windows, a view; the tail short of a window is dropped."""
    n = len(tokens) // (context_length + 1)
    return tokens[:n * (context_length + 1)].reshape(n, context_length + 1)


def _pair(chunks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    import torch  # here, not at the top: sweeps check their data before paying seconds for importing torch

    batch = torch.from_numpy(chunks.astype(np.int64))
    return batch[:, :-1], batch[:, 1:]


class ChunkBatcher:
    """Training batches of packed chunks: a seeded shuffle per epoch, and a cursor, so that a run resumed from
    `state_dict()` sees exactly the batches the uninterrupted run would have seen."""

    def __init__(self, tokens: np.ndarray, context_length: int, batch_size: int, seed: int):
        check_length("training", len(tokens), context_length)
        self.chunks, self.batch_size, self.seed = pack(tokens, context_length), batch_size, seed
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.chunks))

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """x = chunk[:, :-1], y = chunk[:, 1:] (int64); a batch may span an epoch boundary, so it is always full."""
        picked = []
        while len(picked) < self.batch_size:
            if self.cursor == len(self.chunks):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation()
            take = min(self.batch_size - len(picked), len(self.chunks) - self.cursor)
            picked.extend(self._order[self.cursor:self.cursor + take])
            self.cursor += take
        return _pair(self.chunks[picked])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation()


def val_batches(tokens: np.ndarray, context_length: int, batch_size: int, max_batches: int
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `max_batches` batches of chunks in order (the last may be short): every eval sees the same."""
    check_length("validation", len(tokens), context_length)
    chunks = pack(tokens, context_length)[:max_batches * batch_size]
    return [_pair(chunks[i:i + batch_size]) for i in range(0, len(chunks), batch_size)]


def _encode_padded(tokenizer: TextTokenizer, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows truncated to max_length and right-padded with EOS; an empty text becomes one EOS, so length >= 1."""
    ids = np.full((len(texts), max_length), tokenizer.eos_id, dtype=np.int64)
    lengths = np.ones(len(texts), dtype=np.int64)
    for row, tokens in enumerate(tokenizer.encode_batch(texts)):
        tokens = tokens[:max_length]
        ids[row, :len(tokens)] = tokens
        lengths[row] = max(len(tokens), 1)
    return ids, lengths


def prepare_finetune(cfg: DataConfig, tokenizer: TextTokenizer, max_length: int) -> FinetuneData | None:
    """Classification train/test tables, tokenized; None when no fine-tuning data is configured."""
    if cfg.finetune_train is None:
        return None
    if cfg.finetune_test is None and "test" not in available_splits(cfg.finetune_train):
        raise ConfigError(f"fine-tuning data '{cfg.finetune_train}' has no test split; pass --finetune-test")
    train_texts, train_labels = read_classification(cfg.finetune_train, "train")
    test_texts, test_labels = read_classification(cfg.finetune_test or cfg.finetune_train, "test")
    train_ids, train_lengths = _encode_padded(tokenizer, train_texts, max_length)
    test_ids, test_lengths = _encode_padded(tokenizer, test_texts, max_length)
    return FinetuneData(train_ids, train_lengths, train_labels, test_ids, test_lengths, test_labels)


def fewshot_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to n of the first rows, balanced across classes where the data allows: rows taken round-robin over the
    classes, each class in file order. `seed` is accepted but does not change the rows, so few-shot scores
    compare across seeds and with the first-N-rows baseline in the data copy's README ($GPTSWEEP_DATA_DIR)."""
    queues = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    picked = [i for rank in itertools.zip_longest(*queues) for i in rank if i is not None][:n]
    return np.sort(np.asarray(picked, dtype=np.int64))
