"""The default-lr benchmark: its lr grid brackets the best lr before it stops, and the --quick configuration runs
the real sweeps and grid end to end.

    pytest tests/benchmarks/test_default_lr.py
"""
from __future__ import annotations

import functools
import math

import pytest
import ray

from benchmarks import default_lr
from benchmarks.run_pool import run_adaptively

SETUP = default_lr.Setup(preset="cpu", max_lrs=7)
CENTER = SETUP.preset_lr()


def parabola(overrides: dict, best_k: float, diverge_above_k: float = math.inf) -> dict:
    """A stand-in for a training run: val_loss a parabola in log2(lr / preset lr) around best_k."""
    k = math.log2(overrides["optim.lr"] / CENTER)
    return {"val_loss": math.nan if k > diverge_above_k else 3.0 + 0.01 * (k - best_k) ** 2}


def parabola_at(best_k: float, diverge_above_k: float = math.inf):
    return functools.partial(parabola, best_k=best_k, diverge_above_k=diverge_above_k)  # picklable: pool workers


@pytest.mark.parametrize("best_k", [-3, 0, 3])
def test_the_grid_extends_past_its_edge_until_the_best_lr_is_bracketed(best_k):
    results = run_adaptively(default_lr.grid_planner(SETUP), slots=2, train=parabola_at(best_k))
    optimum = default_lr.grid_optimum(results)
    assert optimum.opt_lr == pytest.approx(CENTER * 2.0 ** best_k)
    assert not optimum.at_edge
    assert len(results) == 4 + max(0, -1 - best_k + 1, best_k + 1 - 2)  # the opening four, then one per step


def test_a_grid_that_diverges_above_its_centre_goes_lower_and_stops_at_max_lrs():
    results = run_adaptively(default_lr.grid_planner(SETUP), slots=2, train=parabola_at(-9, diverge_above_k=-0.5))
    assert len(results) == SETUP.max_lrs
    assert min(results) == pytest.approx(CENTER * 2.0 ** (-1 - (SETUP.max_lrs - 4)))
    assert default_lr.grid_optimum(results).at_edge  # still at the bottom edge: the JSON says so


@pytest.mark.slow
def test_quick_configuration_runs_the_sweep_and_the_grid(tiny_corpus):
    result = default_lr.measure(default_lr.Setup("smoke", str(tiny_corpus), "bpe:300", seeds=1, slots=2))
    assert not ray.is_initialized()  # the sweeps ran in this process: a Ray left behind would leak into other tests
    assert len(result["grid_val_loss"]) >= 4
    (sweep,) = result["sweeps"]
    assert sweep["completed"] >= 1 and sweep["trials"] >= sweep["completed"]
    assert sweep["log2_ratio"] == pytest.approx(math.log2(sweep["lr"] / result["grid_best_lr"]), abs=1e-3)
    assert result["mean_log2_ratio"] == pytest.approx(sweep["log2_ratio"])
    assert sweep["val_loss_gap_to_grid"] == pytest.approx(sweep["val_loss"] / result["grid_best_val_loss"] - 1, abs=1e-3)
