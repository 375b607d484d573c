"""Tokenizing a corpus in bounded slices: every document once, in order, the same tokens as one call.

    pytest tests/trainer/test_encode_slices.py
"""
from __future__ import annotations

import numpy as np

from trainer import data
from trainer.data import encode_slices
from trainer.tokenizer import load_tokenizer


def test_slices_keep_every_document_in_order_within_both_limits():
    docs = ["a" * n for n in (5, 3, 9, 1, 1, 1, 20, 2)]
    slices = list(encode_slices(docs, max_docs=3, max_chars=10))
    assert [d for s in slices for d in s] == docs
    assert all(len(s) <= 3 and (sum(map(len, s)) <= 10 or len(s) == 1) for s in slices)
    assert [len(s) for s in slices] == [2, 2, 2, 1, 1]  # 5+3 | 9+1 | 1+1 | 20 (alone: over the limit) | 2


def test_tokens_do_not_depend_on_the_slice_size(tiny_documents, monkeypatch):
    tokenizer = load_tokenizer("bpe:300", tiny_documents)
    whole = data._tokenize(tokenizer, tiny_documents)
    monkeypatch.setattr(data, "_ENCODE_CHARS", 50)  # about one document per slice
    sliced = data._tokenize(tokenizer, tiny_documents)
    assert np.array_equal(whole, sliced)
    assert (whole == tokenizer.eos_id).sum() == len(tiny_documents)
