"""pytest tests/sweeps/test_scratch_threads.py — the sweep's scratch baseline keeps the trials' thread rule (train.threads),
not torch's default of every core, which made it several times slower beside busy trials and its score depend on
the machine's thread count.

    pytest tests/sweeps/test_scratch_threads.py -q
"""
from __future__ import annotations

import numpy as np
import torch

from trainer.config import build_config
from trainer.data import FinetuneData
from trainer.finetune import scratch_metrics


def _table(rows: int, length: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, vocab, (rows, length)), np.full(rows, length), np.arange(rows) % 4)


def test_the_scratch_baseline_runs_on_the_trials_threads():
    cfg = build_config("smoke", {"train.threads": 1, "model.vocab_size": 64})
    data = FinetuneData(*_table(16, cfg.finetune.max_length, 64, 0), *_table(8, cfg.finetune.max_length, 64, 1))
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what torch starts with on a 2-core machine
    try:
        metrics = scratch_metrics(cfg, 64, data)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert set(metrics) == {"finetune_acc_scratch", "finetune_acc_fewshot_scratch"}
