"""How long fine-tuning trains, by table size: one rule for the full and the few-shot head.

    pytest tests/trainer/test_finetune_updates.py
"""
import numpy as np

from trainer.config import FinetuneConfig, build_config
from trainer.finetune import batches, updates


def test_a_mid_size_table_gets_at_least_as_many_updates_as_the_few_shot_one():
    cfg = build_config("cpu").finetune
    few, mid, full = (updates(n, cfg) for n in (cfg.fewshot_n, 581, 5000))
    assert few <= mid <= full
    assert mid >= cfg.steps  # 581 rows are not fitted with one 19-step pass


def test_a_large_table_is_seen_at_least_epochs_times():
    cfg = FinetuneConfig(batch_size=32, epochs=2, steps=10)
    assert updates(5000, cfg) == 2 * 157
    assert updates(100, cfg) == 10


def test_batches_cover_every_row_once_per_pass_and_stop_at_the_budget():
    rows = np.arange(10, 20)
    drawn = list(batches(rows, n_steps=7, batch_size=4, seed=0))
    assert len(drawn) == 7
    first_pass = np.concatenate(drawn[:3])  # 10 rows in batches of 4: 3 batches a pass
    assert sorted(first_pass.tolist()) == rows.tolist()
    assert sorted(np.concatenate(drawn[3:6]).tolist()) == rows.tolist()
