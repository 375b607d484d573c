"""Reference losses of a corpus: what a language model trained on it should beat, in nats per token.

    pytest tests/trainer/test_floors.py

- floor_uniform: log(vocab_size), a model that knows nothing.
- floor_unigram: entropy of the training tokens' unigram distribution (maximum likelihood).
- floor_bigram: cross-entropy on the validation tokens of an interpolated bigram model trained on the training
  tokens: P(w | v) = 0.5 * c(v, w) / c(v) + 0.5 * (c(w) + 1) / (N + V)  (Jelinek-Mercer with an add-one unigram;
  an unseen context v contributes 0 from the bigram term). This is the recipe of the data copy's README:
  on its wiki.test.raw article split with the GPT-2 tokenizer it gives 7.18 (unigram) and 6.62 nats (perplexity 753).

With `token_bytes` (TextTokenizer.token_bytes()) each floor is also given in bits per byte, `floor_*_bpb`: its
total code length over the validation targets (val[1:], the tokens the bigram predicts) divided by ln 2 × the
UTF-8 bytes they stand for. Bits per byte compare across tokenizers, which nats per token do not.

Counts are sparse (np.unique over v * V + w), so 260k tokens take a few tens of milliseconds.
"""
from __future__ import annotations

import numpy as np

BIGRAM_LAMBDA = 0.5


def loss_floors(train: np.ndarray, val: np.ndarray, vocab_size: int,
                token_bytes: np.ndarray | None = None) -> dict[str, float]:
    """{'floor_uniform', 'floor_unigram', 'floor_bigram'} in nats per token, and with token_bytes the same
    floors in bits per byte as 'floor_uniform_bpb', 'floor_unigram_bpb', 'floor_bigram_bpb'."""
    train = np.asarray(train, dtype=np.int64)
    val = np.asarray(val, dtype=np.int64)
    if len(train) < 2 or len(val) < 2:
        raise ValueError(f"need at least 2 train and 2 validation tokens, got {len(train)} and {len(val)}")
    unigram_counts = np.bincount(train, minlength=vocab_size)
    seen = unigram_counts[unigram_counts > 0] / len(train)
    floors = {"floor_uniform": float(np.log(vocab_size)), "floor_unigram": float(-(seen * np.log(seen)).sum())}

    # Bigram counts c(v, w) keyed by v * V + w, sorted, so validation pairs are looked up with searchsorted.
    pairs, pair_counts = np.unique(train[:-1] * vocab_size + train[1:], return_counts=True)
    context_counts = np.bincount(train[:-1], minlength=vocab_size)
    queries = val[:-1] * vocab_size + val[1:]
    where = np.minimum(np.searchsorted(pairs, queries), len(pairs) - 1)
    bigram = np.where(pairs[where] == queries, pair_counts[where], 0)
    context = context_counts[val[:-1]]
    p_bigram = bigram / np.maximum(context, 1)  # 0 for an unseen context: bigram is 0 there too
    p_unigram = (unigram_counts[val[1:]] + 1) / (len(train) + vocab_size)
    p = BIGRAM_LAMBDA * p_bigram + (1 - BIGRAM_LAMBDA) * p_unigram
    floors["floor_bigram"] = float(-np.log(p).mean())
    if token_bytes is not None:
        nats_to_bpb = (len(val) - 1) / (np.log(2) * max(int(np.asarray(token_bytes)[val[1:]].sum()), 1))
        floors.update({f"{name}_bpb": float(value * nats_to_bpb) for name, value in list(floors.items())})
    return floors
