"""pytest tests/trainer/test_result_schema.py — the rules every writer and reader of results shares
(trainer/result_schema.py): a trial's outcome from its last report, and which trials may be called best.
"""
from __future__ import annotations

import math

import pytest

from trainer.result_schema import (COMPLETED, DIVERGED, DIVERGED_LOSS, DIVERGED_PPL, ERROR, INTERRUPTED, PRUNED,
                                   RUNNING, counts_for_best, is_placeholder, outcome_of)


@pytest.mark.parametrize("outcome", [PRUNED, INTERRUPTED, DIVERGED, ERROR, RUNNING])
def test_only_a_completed_trial_counts_for_best_however_low_its_val_ppl(outcome):
    assert counts_for_best(COMPLETED, 40.0)
    assert not counts_for_best(outcome, 1.5)  # a shorter run or a broken one is not a result to rank


@pytest.mark.parametrize("val_ppl", [None, math.nan, math.inf])
def test_a_completed_trial_without_a_measured_val_ppl_does_not_count(val_ppl):
    assert not counts_for_best(COMPLETED, val_ppl)


def test_the_best_of_a_sweep_is_the_lowest_completed_even_when_a_pruned_one_is_lower():
    trials = [("pruned-early", PRUNED, 20.0), ("interrupted", INTERRUPTED, 25.0), ("slow", COMPLETED, 60.0),
              ("good", COMPLETED, 40.0), ("diverged", DIVERGED, DIVERGED_PPL)]
    ranked = [t for t in trials if counts_for_best(t[1], t[2])]
    assert min(ranked, key=lambda t: t[2])[0] == "good"


def test_outcome_from_the_last_report():
    assert outcome_of({"step": 12, "max_steps": 12, "val_loss": 3.0}) == COMPLETED
    assert outcome_of({"step": 8, "max_steps": 12, "val_loss": 3.0}) == PRUNED
    assert outcome_of({"step": 5, "max_steps": 12, "val_loss": DIVERGED_LOSS, "diverged": 1}) == DIVERGED
    assert outcome_of({}) == PRUNED  # nothing reported yet


def test_placeholders_are_recognised_and_measurements_are_not():
    assert is_placeholder("val_loss", DIVERGED_LOSS) and is_placeholder("val_ppl", DIVERGED_PPL)
    assert not is_placeholder("val_loss", 3.2) and not is_placeholder("val_ppl", 1e6)
    assert not is_placeholder("train_loss", DIVERGED_LOSS)
