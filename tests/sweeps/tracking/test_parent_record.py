"""pytest tests/sweeps/tracking/test_parent_record.py — what the tracking callback writes for a sweep's end, on a
real SQLite MLflow without Ray: each trial's outcome and run status (an errored trial: `error`, FAILED), and the
best trial on the parent (tags and best_* metrics) by the one rule, even when a pruned or interrupted trial
reported a lower val_ppl than every completed one.
"""
from __future__ import annotations

import math

import pytest

from sweeps.engine.tracking.tune_events import MLflowTracking
from tests.support import TuneTrial, runs_of
from trainer.result_schema import SweepIdentity

# (trial id, lr, reports as (step, val_ppl), how it ends); the smoke preset runs 12 steps
TRIALS = [("t_done", 1e-3, [(4, 90.0), (8, 60.0), (12, 40.0)], "complete"),
          ("t_worse", 3e-3, [(4, 95.0), (8, 70.0), (12, 50.0)], "complete"),
          ("t_pruned", 2e-3, [(4, 30.0), (8, 20.0)], "complete"),  # ASHA stopped it at step 8: lower, shorter
          ("t_interrupted", 5e-4, [(4, 10.0)], None),  # still running when the sweep was stopped
          ("t_error", 1e-4, [(4, 5.0), (8, 4.0)], "error")]


@pytest.fixture(scope="module")
def ended_sweep(tmp_path_factory):
    """The sweep's MLflow record after its end; the tests only read it."""
    tmp_path = tmp_path_factory.mktemp("parent_record")
    tracking = MLflowTracking(SweepIdentity(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", str(tmp_path / "exp_1")),
                              {"sweep.search": "optuna"}, ["optim.lr"])
    tracking.setup(total_num_samples=len(TRIALS))
    trials = []
    for trial_id, lr, reports, end in TRIALS:
        trial = TuneTrial(trial_id, **{"optim.lr": lr})
        trials.append(trial)
        tracking.on_trial_start(0, trials, trial)
        for step, ppl in reports:
            trial.last_result = {"step": step, "val_ppl": ppl, "val_loss": math.log(ppl), "train_loss": 5.0,
                                 "max_steps": 12}
            tracking.on_trial_result(0, trials, trial, dict(trial.last_result))
        if end == "complete":
            if trial.last_result["step"] == 12:
                trial.last_result = {**trial.last_result, "finetune_acc": 0.5 + lr, "finetune_acc_fewshot": 0.3}
            trial.status = "TERMINATED"
            tracking.on_trial_complete(0, trials, trial)
        elif end == "error":
            trial.status = "ERROR"
            tracking.on_trial_error(0, trials, trial)
    tracking.on_experiment_end(trials)
    return tmp_path


def test_each_trial_ends_with_its_outcome_and_status(ended_sweep):
    _, _, children = runs_of(ended_sweep, "exp")
    ends = {c.data.tags["gptsweep.trial_id"]: (c.data.tags["gptsweep.outcome"], c.info.status) for c in children}
    assert ends == {"t_done": ("completed", "FINISHED"), "t_worse": ("completed", "FINISHED"),
                    "t_pruned": ("pruned", "KILLED"), "t_interrupted": ("interrupted", "KILLED"),
                    "t_error": ("error", "FAILED")}


def test_the_parent_names_the_best_completed_trial_not_a_lower_pruned_or_interrupted_one(ended_sweep):
    _, (parent,), _ = runs_of(ended_sweep, "exp")
    assert parent.info.status == "KILLED"  # one trial was interrupted: the sweep awaits --resume
    assert parent.data.tags["gptsweep.best_trial_id"] == "t_done"
    assert parent.data.tags["best.optim.lr"] == "0.001"
    assert parent.data.metrics["best_val_ppl"] == 40.0
    assert parent.data.metrics["best_val_loss"] == pytest.approx(math.log(40.0))
    assert parent.data.metrics["best_finetune_acc"] == pytest.approx(0.501)
    assert parent.data.metrics["best_finetune_acc_fewshot"] == pytest.approx(0.3)


def end_part(uri: str, sweep_path: str, trial_id: str, val_ppl: float) -> None:
    """One part of a sweep (its first, or a part that grows it) in which one trial completes with `val_ppl`."""
    tracking = MLflowTracking(SweepIdentity(uri, "exp", sweep_path), {"sweep.search": "optuna"}, ["optim.lr"])
    tracking.setup(total_num_samples=1)
    trial = TuneTrial(trial_id, **{"optim.lr": val_ppl / 1e4})
    tracking.on_trial_start(0, [trial], trial)
    trial.last_result = {"step": 12, "val_ppl": val_ppl, "val_loss": math.log(val_ppl), "train_loss": 5.0, "max_steps": 12}
    tracking.on_trial_result(0, [trial], trial, dict(trial.last_result))
    trial.status = "TERMINATED"
    tracking.on_trial_complete(0, [trial], trial)
    tracking.on_experiment_end([trial])


def test_a_part_that_grows_the_sweep_keeps_the_better_best_of_an_earlier_part(tmp_path):
    """--resume --num-samples N runs the new trials as a Tune experiment of their own, which sees only them."""
    uri, sweep_path = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "exp_1")
    end_part(uri, sweep_path, "t_first", 40.0)
    end_part(uri, sweep_path, "t_grown", 50.0)  # worse: the first part's trial stays the best
    _, (parent,), children = runs_of(tmp_path, "exp")
    assert len(children) == 2
    assert parent.data.tags["gptsweep.best_trial_id"] == "t_first" and parent.data.metrics["best_val_ppl"] == 40.0
    end_part(uri, sweep_path, "t_better", 30.0)  # better: it becomes the best
    _, (parent,), _ = runs_of(tmp_path, "exp")
    assert parent.data.tags["gptsweep.best_trial_id"] == "t_better" and parent.data.metrics["best_val_ppl"] == 30.0
