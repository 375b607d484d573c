"""pytest tests/trainer/test_cache_check.py — a damaged token cache is found by its own check and rebuilt, saying so once.

    pytest tests/trainer/test_cache_check.py -q
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.config import build_config
from trainer.data import prepare_corpus
from trainer.token_cache import damage


def _truncate_train(root: Path) -> None:
    data = (root / "train.npy").read_bytes()
    (root / "train.npy").write_bytes(data[:len(data) // 2])


def _break_meta(root: Path) -> None:
    (root / "meta.json").write_text('{"format": 2, "vocab', encoding="utf-8")


def _ids_beyond_the_vocabulary(root: Path) -> None:
    tokens = np.load(root / "train.npy")
    np.save(root / "train.npy", np.full_like(tokens, json.loads((root / "meta.json").read_text())["vocab_size"]))


def _zeros_in_range(root: Path) -> None:  # same size, valid ids: only the checksum tells
    np.save(root / "train.npy", np.zeros_like(np.load(root / "train.npy")))


DAMAGES = {
    "truncated train.npy": (_truncate_train, "train.npy"),
    "broken meta.json": (_break_meta, "meta.json"),
    "missing val.npy": (lambda root: (root / "val.npy").unlink(), "val.npy"),
    "ids outside the vocabulary": (_ids_beyond_the_vocabulary, "outside the vocabulary"),
    "all-zero train.npy": (_zeros_in_range, "checksum"),
    "missing tokenizer.json": (lambda root: (root / "tokenizer.json").unlink(), "tokenizer.json"),
}


def _prepare(corpus: Path):
    cfg = build_config("smoke", {"data.source": str(corpus), "data.tokenizer": "bpe:300"})
    return prepare_corpus(cfg.data, cfg.model.context_length)


def _cache_root(summary: str) -> Path:
    return Path(summary.rsplit(": ", 1)[1])


def test_an_intact_cache_passes_its_check_and_is_used(tiny_corpus, capsys):
    first, _ = _prepare(tiny_corpus)
    again, _ = _prepare(tiny_corpus)
    assert "cache hit" in again.summary and damage(_cache_root(again.summary)) is None
    assert "failed its check" not in capsys.readouterr().err
    assert np.array_equal(first.train, again.train)


@pytest.mark.parametrize("name", DAMAGES)
def test_a_damaged_cache_is_rebuilt_with_one_line_saying_why(tiny_corpus, capsys, name):
    spoil, named_in_message = DAMAGES[name]
    original, _ = _prepare(tiny_corpus)
    root = _cache_root(original.summary)
    expected_train, expected_val = np.array(original.train), np.array(original.val)
    del original  # release the memory maps before the files change
    spoil(root)
    assert named_in_message in damage(root)
    capsys.readouterr()

    rebuilt, tokenizer = _prepare(tiny_corpus)
    lines = [line for line in capsys.readouterr().err.splitlines() if "failed its check" in line]
    assert len(lines) == 1 and named_in_message in lines[0] and "rebuilding" in lines[0]
    assert "cache rebuilt" in rebuilt.summary and damage(root) is None
    assert np.array_equal(rebuilt.train, expected_train) and np.array_equal(rebuilt.val, expected_val)
    assert tokenizer.vocab_size == rebuilt.vocab_size
