"""pytest tests/trainer/test_bits_per_byte.py — bits per byte: val_bpb and the floors in bits per byte.

Bits per byte = total NLL in nats / (ln 2 × UTF-8 bytes of the text the predicted tokens stand for).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.floors import loss_floors
from trainer.tokenizer import TextTokenizer, load_tokenizer, train_bpe

TEXT = ("Café crème, naïve façade — 東京 and Zürich: 3 × 4 = 12 🙂. " * 3).strip()


def test_token_bytes_sum_to_the_utf8_length_of_any_text_and_eos_stands_for_none():
    tokenizer = TextTokenizer(train_bpe([TEXT, "plain ascii words here"] * 20, 300), "bpe:300")
    lengths = tokenizer.token_bytes()
    for text in (TEXT, "ascii only", "東京 🙂", "é" * 7):
        assert lengths[tokenizer.encode(text)].sum() == len(text.encode("utf-8"))
    assert lengths[tokenizer.eos_id] == 0


def test_gpt2_token_bytes_are_exact_too(shared_data):
    tokenizer = load_tokenizer("gpt2")
    ids = tokenizer.encode(TEXT + "<|endoftext|>")
    assert ids[-1] == tokenizer.eos_id
    assert tokenizer.token_bytes()[ids].sum() == len(TEXT.encode("utf-8"))


def test_val_bpb_is_total_nll_over_ln2_times_the_bytes_of_the_evaluated_targets(smoke_trainer):
    trainer = smoke_trainer(**{"train.eval_batches": 3})
    for _ in range(3):
        trainer.train_step()
    metrics = trainer.evaluate()
    # By hand: the full logits' summed cross-entropy, and the bytes of each target row's decoded text (the
    # tiny corpus is ASCII, so a row's text is exactly its bytes; EOS stands for no text).
    nll, n_bytes, backend = 0.0, 0, trainer.tokenizer._backend
    trainer.model.eval()
    with torch.no_grad():
        for x, y in trainer.val:
            logits, _ = trainer.model(x)
            nll += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
            n_bytes += sum(len(backend.decode(row.tolist(), skip_special_tokens=True).encode()) for row in y)
    assert len(trainer.val) == 3 and trainer.val_bytes == n_bytes
    assert metrics["val_bpb"] == pytest.approx(nll / (math.log(2) * n_bytes), rel=1e-4)
    assert metrics["val_loss"] == pytest.approx(nll / sum(y.numel() for _, y in trainer.val), rel=1e-4)


def test_fewer_eval_batches_count_only_their_own_bytes(smoke_trainer):
    one, two = smoke_trainer(**{"train.eval_batches": 1}), smoke_trainer(**{"train.eval_batches": 2})
    assert len(one.val) == 1 and 0 < one.val_bytes < two.val_bytes


def test_bpb_floors_convert_each_floor_by_the_bytes_of_the_validation_targets():
    train, val, vocab = np.array([0, 1, 0, 1, 0, 2]), np.array([0, 1, 1, 2]), 3
    token_bytes = np.array([1, 3, 0])  # token 2 is an EOS: no text
    floors = loss_floors(train, val, vocab, token_bytes)
    targets_bytes = 3 + 3 + 0  # val[1:] = 1, 1, 2
    for name in ("floor_uniform", "floor_unigram", "floor_bigram"):
        assert floors[f"{name}_bpb"] == pytest.approx(floors[name] * 3 / (math.log(2) * targets_bytes))
    assert "floor_bigram_bpb" not in loss_floors(train, val, vocab)  # no bytes, no bpb


def test_the_real_bigram_is_2_10_bits_per_byte_as_the_data_readme_says(shared_data):
    from trainer.config import build_config
    from trainer.data import prepare_corpus

    cfg = build_config("cpu", {"data.source": "wikitext-2", "data.tokenizer": "gpt2"})
    corpus, tokenizer = prepare_corpus(cfg.data, cfg.model.context_length)
    floors = loss_floors(corpus.train, corpus.val, corpus.vocab_size, tokenizer.token_bytes())
    assert floors["floor_bigram_bpb"] == pytest.approx(2.10, abs=0.005)
