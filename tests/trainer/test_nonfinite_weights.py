"""pytest tests/trainer/test_nonfinite_weights.py — weights that went inf/NaN while the training loss was still finite end
the run as diverged (a result, ranked last), not as an error from sampling a broken model.

    pytest tests/trainer/test_nonfinite_weights.py -q
"""
from __future__ import annotations

import json
import math

from trainer.__main__ import main as train_main
from trainer.result_schema import DIVERGED_LOSS


def test_a_run_whose_weights_break_under_a_finite_loss_ends_diverged(tiny_corpus, tmp_path):
    # lr 1e3: the loss is still finite (~1e10) at the first eval, but the weights hold inf and sampling raised
    assert train_main(["--preset", "smoke", "--data", str(tiny_corpus), "--tokenizer", "bpe:300",
                       "--set", "optim.lr=1e3", "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["diverged"] == 1.0 and metrics["val_loss"] == DIVERGED_LOSS
    assert math.isfinite(metrics["train_loss"])  # the case the training-loss check alone let through


def test_a_healthy_run_checks_its_weights_and_goes_on(smoke_trainer):
    trainer = smoke_trainer(**{"train.max_steps": 4, "train.eval_every": 2})
    assert trainer.weights_finite()
    record = trainer.run()
    assert record.metrics["diverged"] == 0.0 and record.samples and record.metrics["step"] == 4
