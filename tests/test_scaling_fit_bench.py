"""The scaling-fit benchmark: no run past one epoch, and the --quick configuration runs the real code path
(grid, fit on the smaller runs, prediction of the held-out ones, the recommendation check).

    pytest tests/test_scaling_fit_bench.py
"""
from __future__ import annotations

import dataclasses

import pytest

from benchmarks import scaling_fit


def test_budgets_are_multiples_of_the_largest_models_parameters():
    setup = scaling_fit.Setup()
    n_max = 12 * 128 * 128 * 2 + 13 * 128 * 2 + 2 * 128  # 128 × 2, the largest shape
    tokens = [s * setup.tokens_per_step for s in setup.budgets()]
    assert [round(t / n_max, 1) for t in tokens] == [2.0, 6.3, 20.0]


def test_a_budget_past_one_epoch_is_refused_before_any_run(tiny_corpus, capsys):
    setup = dataclasses.replace(scaling_fit.QUICK, data=str(tiny_corpus), tokenizer="bpe:300",
                                tokens_per_param=(1.0, 10.0, 100.0))
    with pytest.raises(SystemExit) as exit_info:
        scaling_fit.measure(setup)
    assert exit_info.value.code == 2
    assert "exceeds one epoch" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_configuration_fits_predicts_and_checks(tiny_corpus):
    setup = dataclasses.replace(scaling_fit.QUICK, data=str(tiny_corpus), tokenizer="bpe:300")
    result = scaling_fit.measure(setup)
    assert result["runs"] == 15 and result["fitted_on"] == 12 and len(result["held_out"]) == 3
    assert 0 < result["epochs_max"] <= 1
    assert result["tokens_per_param_largest"] == pytest.approx([0.1, 0.2, 0.4], rel=0.05)
    check = result["check"]
    assert check["steps"] >= 1 and check["measured"] > 0 and len(check["interval_90"]) == 2
