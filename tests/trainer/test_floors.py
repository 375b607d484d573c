"""Corpus reference losses (trainer.floors): hand-checkable cases, then the README's figures on the real data.

    pytest tests/trainer/test_floors.py
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.floors import loss_floors


def test_uniform_floor_is_log_vocab():
    rng = np.random.default_rng(0)
    floors = loss_floors(rng.integers(0, 100, 500), rng.integers(0, 100, 50), vocab_size=100)
    assert floors["floor_uniform"] == math.log(100)


def test_unigram_entropy_of_a_hand_made_array():
    train = np.array([0, 0, 1, 1, 2, 2, 2, 2])  # p = 1/4, 1/4, 1/2
    floors = loss_floors(train, np.array([0, 1, 2]), vocab_size=5)
    assert floors["floor_unigram"] == pytest.approx(1.5 * math.log(2))


def test_bigram_by_hand():
    train, val, vocab = np.array([0, 1, 0, 1, 0]), np.array([0, 1, 1]), 3
    # c(0,1)=2, c(0)=2 as a context; c(1,0)=2, c(1)=2; unigram add-one: (c+1)/(5+3) = 4/8, 3/8, 1/8
    p01 = 0.5 * 1.0 + 0.5 * 3 / 8
    p11 = 0.5 * 0.0 + 0.5 * 3 / 8
    expected = -(math.log(p01) + math.log(p11)) / 2
    assert loss_floors(train, val, vocab)["floor_bigram"] == pytest.approx(expected)


def test_bigram_on_a_repeating_sequence_is_far_below_unigram():
    cycle = np.arange(10)
    floors = loss_floors(np.tile(cycle, 200), np.tile(cycle, 20), vocab_size=10)
    assert floors["floor_unigram"] == pytest.approx(math.log(10))
    # every next token is certain under the bigram: p = 0.5 + 0.5 * ~0.1, so about -log(0.55)
    assert floors["floor_bigram"] < 0.3 * floors["floor_unigram"]


def test_unseen_context_and_unseen_token_stay_finite():
    floors = loss_floors(np.array([0, 1, 0, 1]), np.array([7, 8, 9]), vocab_size=10)
    assert all(math.isfinite(v) for v in floors.values())


def test_real_data_matches_the_readme(shared_data):
    from trainer.config import DataConfig
    from trainer.data import prepare_corpus

    cfg = DataConfig(source=str(shared_data / "wikitext-2" / "wiki.test.raw"),
                     tokenizer=str(shared_data / "gpt2_tokenizer"))
    corpus, _ = prepare_corpus(cfg, context_length=64)
    assert (len(corpus.train), len(corpus.val)) == (258_554, 27_668)  # the README's article split
    floors = loss_floors(corpus.train, corpus.val, corpus.vocab_size)
    assert floors["floor_uniform"] == pytest.approx(10.82, abs=0.01)
    assert floors["floor_unigram"] == pytest.approx(7.18, abs=0.02)
    assert floors["floor_bigram"] == pytest.approx(6.62, abs=0.02)
    assert math.exp(floors["floor_bigram"]) == pytest.approx(753, rel=0.01)
