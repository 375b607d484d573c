"""The μP-transfer benchmark's lr search: every line's optimum ends with a tried lr on either side, and the widest
model is trained at the narrowest one's optimum; the --quick configuration runs the real code path.

    pytest tests/benchmarks/test_mup_transfer_search.py
"""
from __future__ import annotations

import dataclasses
import math

import pytest

from analysis import transfer_fit
from benchmarks import mup_transfer
from benchmarks.run_pool import run_adaptively

SETUP = dataclasses.replace(mup_transfer.QUICK, data="unused", widths=(16, 32, 64, 128), lr_center=1e-2, max_lrs=8)


def optimum_k(param: str, width: int) -> int:
    """μP: two lattice steps above where its lines start, at every width; SP: one step lower per doubling."""
    return 2 if param == "mup" else -round(math.log2(width / 16))


def parabola_run(overrides: dict) -> dict:
    """A stand-in for a training run: val_loss a parabola in log2 lr around optimum_k; diverged above k = 4."""
    k = math.log2(overrides["optim.lr"] / SETUP.lr_center)
    opt = optimum_k(overrides["model.parametrization"], overrides["model.d_model"])
    loss = math.nan if k > 4 else 3.0 + 0.01 * (k - opt) ** 2
    return {"val_loss": loss, "epochs": 0.01, "steps": 24.0, "device_s": 1.0}


def test_every_line_brackets_its_optimum_and_the_widest_runs_at_the_narrowest_optimum():
    results = run_adaptively(mup_transfer.planner(SETUP), slots=2, train=parabola_run)
    summary, table = mup_transfer.summarize(SETUP, results, epoch_tokens=10_000)
    optima = transfer_fit.optimal_lrs(table)
    assert not optima.at_edge.any()
    for _, row in optima.iterrows():
        assert row.opt_lr == pytest.approx(SETUP.lr(optimum_k(row.parametrization, row.width)))
    assert summary["drift_log2"] == summary["spread_log2"] == {"sp": 3.0, "mup": 0.0}
    assert summary["transfer_gap"] == 0.0 and summary["transfer_gap_sp"] > 0  # SP's widest ran at lr(0)
    assert summary["goal_met"] and summary["steps_min"] == 24
    per_line = table.groupby(["parametrization", "width"]).size()
    assert per_line.max() <= SETUP.max_lrs and per_line.min() >= 3


def test_a_line_stops_at_max_lrs_and_says_it_is_at_the_edge():
    capped = dataclasses.replace(SETUP, widths=(16, 32), max_lrs=4)
    results = run_adaptively(mup_transfer.planner(capped), slots=2, train=parabola_run)
    summary, _ = mup_transfer.summarize(capped, results, epoch_tokens=10_000)
    assert summary["at_grid_edge"]["mup"] == {16: True, 32: True}  # k = -1..2 tried, optimum 2 at the top edge


@pytest.mark.slow
def test_quick_configuration_trains_for_real(tiny_corpus):
    quick = dataclasses.replace(mup_transfer.QUICK, data=str(tiny_corpus), tokenizer="bpe:300", max_lrs=4)
    summary, table = mup_transfer.measure(quick)
    assert set(table.width) == {16, 32} and len(table) >= 12
    assert summary["steps_min"] == 24 and 0 < summary["epochs_max"]
    assert set(summary["optimal_lr"]) == {"sp", "mup"}


@pytest.mark.parametrize("argv, fragment", [
    (["--widths", "32"], "needs at least two widths"),
    (["--widths", "32,63"], "not divisible by model.n_heads"),
    (["--steps", "0"], "train.max_steps=0"),
])
def test_bad_input_is_one_line_and_exit_code_2_before_any_run(argv, fragment, capsys):
    assert mup_transfer.main(["--quick", "--data", "no-such-corpus", *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
