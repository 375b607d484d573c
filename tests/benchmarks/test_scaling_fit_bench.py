"""The scaling-fit benchmark: no run past one epoch, and the --quick configuration runs the real code path
(grid, fit on the smaller runs, prediction of the held-out ones, the recommendation check).

    pytest tests/benchmarks/test_scaling_fit_bench.py
"""
from __future__ import annotations

import dataclasses

import pytest

from benchmarks import scaling_fit
from trainer.compute import non_embedding_params


def test_budgets_are_multiples_of_the_largest_models_parameters():
    setup = scaling_fit.Setup()
    n_max = 12 * 128 * 128 * 2 + 13 * 128 * 2 + 2 * 128  # 128 × 2, the largest shape
    tokens = [s * setup.tokens_per_step for s in setup.budgets()]
    assert [round(t / n_max, 1) for t in tokens] == [2.0, 6.3, 20.0]


def test_a_budget_past_one_epoch_is_refused_before_any_run(tiny_corpus, capsys):
    argv = ["--quick", "--data", str(tiny_corpus), "--tokenizer", "bpe:300", "--tokens-per-param", "1,10,100"]
    assert scaling_fit.main(argv) == 2
    err = capsys.readouterr().err
    assert "exceeds one epoch" in err and len(err.strip().splitlines()) == 1


def test_a_recommended_run_past_one_epoch_is_reported_not_trained():
    shapes = [(16, 1), (32, 1), (48, 1), (64, 2), (96, 2)]
    runs = [{"d_model": w, "n_layers": n, "n_params_non_embedding": float(non_embedding_params(w, n)),
             "tokens": float(d), "val_loss": 2.0 + 40 / non_embedding_params(w, n) ** 0.3 + 60 / d ** 0.3,
             "flops": 6.0 * non_embedding_params(w, n) * d} for w, n in shapes for d in (1e5, 3e5, 1e6)]
    check = scaling_fit.check_recommendation(runs, scaling_fit.QUICK, vocab_size=300, epoch_tokens=1)
    assert check["skipped"] == "the recommended run exceeds one epoch" and check["inside"] is False
    low, high = check["interval_90"]
    assert low <= check["predicted"] <= high and check["steps"] * scaling_fit.QUICK.tokens_per_step > 1


@pytest.mark.slow
def test_quick_configuration_fits_predicts_and_checks(tiny_corpus):
    # A small check budget: the tiny corpus (~10k tokens) must hold the recommended run.
    setup = dataclasses.replace(scaling_fit.QUICK, data=str(tiny_corpus), tokenizer="bpe:300", check_flops=1e7)
    result = scaling_fit.measure(setup)
    assert result["runs"] == 15 and result["fitted_on"] == 12 and len(result["held_out"]) == 3
    assert 0 < result["epochs_max"] <= 1
    assert result["tokens_per_param_largest"] == pytest.approx([0.1, 0.2, 0.4], rel=0.05)
    check = result["check"]
    assert check["steps"] >= 1 and check["measured"] > 0 and len(check["interval_90"]) == 2
