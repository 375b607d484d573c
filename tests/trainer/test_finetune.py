"""pytest tests/trainer/test_finetune.py — the fine-tuner learns (trainer/finetune.py): on a small table whose label
one keyword decides, a tiny GPT from random weights reaches >= 90 % test accuracy; it is scored on every test row.
"""
from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch

from trainer.config import DataConfig, FinetuneConfig, ModelConfig
from trainer.data import prepare_finetune
from trainer.finetune import finetune_metrics
from trainer.model import GPT
from trainer.tokenizer import TextTokenizer, train_bpe

FILLER = ("river garden letter machine child teacher storm found carried watched opened built near under across "
          "after before slowly again quiet small old red town cat").split()
KEYWORDS = {"apple": 1, "stone": 0}


def keyword_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """Rows of random filler words with one keyword at a random place; the keyword is the label."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        keyword = rng.choice(sorted(KEYWORDS))
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 9))]
        words.insert(rng.randint(0, len(words)), keyword)
        rows.append((" ".join(words), KEYWORDS[keyword]))
    return rows


@pytest.fixture
def keyword_table(tmp_path):
    """(FinetuneData, vocabulary size) of 400 training and 100 test rows, tokenized with a BPE trained on them
    (600 tokens: whole words, so each row is a few tokens)."""
    tables = {"train": keyword_rows(400, seed=1), "test": keyword_rows(100, seed=2)}
    for split, rows in tables.items():
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([("text", "label"), *rows])
    tokenizer = TextTokenizer(train_bpe([text for rows in tables.values() for text, _ in rows] * 5, 600), "bpe:600")
    cfg = DataConfig(finetune_train=str(tmp_path / "train.csv"), finetune_test=str(tmp_path / "test.csv"))
    return prepare_finetune(cfg, tokenizer, max_length=16), tokenizer.vocab_size


def test_the_fine_tuner_learns_a_keyword_rule(keyword_table):
    data, vocab_size = keyword_table
    assert sorted(np.unique(data.test_labels)) == [0, 1] and len(data.test_labels) == 100
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layers=1, n_heads=2, d_model=32, context_length=16, dropout=0.0,
                            vocab_size=vocab_size))
    # Seeds 0-2 reach 0.99-1.0 with these settings; chance is 0.5, and a fine-tuner that never steps stays near it.
    cfg = FinetuneConfig(lr=3e-3, epochs=3, steps=0, batch_size=16, max_length=16, fewshot_n=8,
                         pooling="last")
    metrics = finetune_metrics(model, data, cfg, seed=0)
    assert metrics["finetune_acc"] >= 0.9, metrics
    assert 0 <= metrics["finetune_acc_fewshot"] <= 1
