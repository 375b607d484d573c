"""pytest tests/sweeps/tracking/test_run_page.py — run names, the sweep's description and its UI URL, on a real
SQLite MLflow.

The page these make is looked at in a real browser by tests/sweeps/tracking/test_mlflow_ui.py.
"""
from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from sweeps.engine.tracking import run_page as mlflow_view
from sweeps.engine.tracking.writer import ensure_experiment

SEARCHED = ["optim.lr", "optim.warmup_steps"]


def test_values_are_short_and_exact_enough():
    assert [mlflow_view.format_value(v) for v in (0.00265, 1e-3, 3e-4, 0.1, 38, 38.0, 12345.0, 0.0, "x")] == \
        ["2.65e-3", "1e-3", "3e-4", "0.1", "38", "38", "12345", "0", "x"]


def test_trial_names_say_what_was_tried_and_stay_unique():
    config = {"optim.lr": 0.00265, "optim.warmup_steps": 38, "train.seed": 0}
    taken: set[str] = set()
    names = []
    for _ in range(3):
        names.append(mlflow_view.trial_run_name(config, SEARCHED, taken))
        taken.add(names[-1])
    assert names == ["lr=2.65e-3 warmup=38", "lr=2.65e-3 warmup=38 (2)", "lr=2.65e-3 warmup=38 (3)"]
    assert mlflow_view.short_names(["model.dropout", "optim.dropout", "optim.lr"]) == {
        "model.dropout": "model.dropout", "optim.dropout": "optim.dropout", "optim.lr": "lr"}


def test_sweep_name_and_urls():
    import time

    started = time.mktime((2026, 12, 2, 3, 53, 0, 0, 0, -1))
    assert mlflow_view.sweep_run_name("lr_warmup", started, 6) == "lr_warmup 2026-12-02 03:53, 6 trials"
    assert mlflow_view.ui_url("3", "abc") == \
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert mlflow_view.ui_url("3", address="http://host:5000") == \
        "http://host:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=gptsweep"


SWEEP = {"experiment": "lr_warmup", "experiment_id": "1", "run_id": "P", "search": "optuna", "scheduler": "asha",
         "searched": SEARCHED}


def test_note_ranks_trials_by_val_ppl_and_puts_failures_last():
    trials = [{"run_id": "a", "name": "lr=1e-3 warmup=10", "outcome": "completed", "val_ppl": 40.0,
               "finetune_acc": 0.5},
              {"run_id": "b", "name": "lr=3e-3 warmup=20", "outcome": "diverged", "val_ppl": 1.0},
              {"run_id": "c", "name": "lr=2e-3 warmup=5", "outcome": "completed", "val_ppl": 30.0,
               "finetune_acc": 0.6},
              {"run_id": "d", "name": "lr=1e-4 warmup=5", "outcome": "pruned", "val_ppl": 90.0}]
    note = mlflow_view.parent_note(SWEEP, trials)
    assert "**Best trial: [lr=2e-3 warmup=5](#/experiments/1/runs/c?workflowType=machine_learning)** (completed)" \
        in note
    rows = [line for line in note.splitlines() if line.startswith("| [")]
    assert [r.split("]")[0][3:] for r in rows] == ["lr=2e-3 warmup=5", "lr=1e-3 warmup=10", "lr=1e-4 warmup=5",
                                                   "lr=3e-3 warmup=20"]
    assert "| val_ppl | val_loss |" not in note and "| val_ppl | finetune_acc |" in note  # only metrics present
    assert "2 completed, 1 diverged, 1 pruned" in note
    assert "python -m analysis.report --experiment lr_warmup --run P" in note
    shortened = mlflow_view.parent_note(SWEEP, trials, rows=2)
    assert "lr=1e-4 warmup=5" not in shortened and "and 2 more trials" in shortened


def test_describe_sweep_writes_name_note_and_counts(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = ensure_experiment(MlflowClient(uri), "lr_warmup")
    client = MlflowClient(uri)
    tags = client.get_experiment(experiment_id).tags
    assert tags[mlflow_view.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert mlflow_view.NOTE_TAG in tags
    parent = client.create_run(experiment_id, run_name="x", tags={"gptsweep.searched": ",".join(SEARCHED),
                                                                  "gptsweep.role": "sweep"}).info.run_id
    client.log_param(parent, "sweep.search", "grid")
    for name, outcome, ppl in (("lr=1e-3 warmup=1", "completed", 50.0), ("lr=1e-2 warmup=1", "pruned", 80.0)):
        child = client.create_run(experiment_id, run_name=name, tags={"mlflow.parentRunId": parent,
                                                                      "gptsweep.outcome": outcome}).info.run_id
        client.log_metric(child, "val_ppl", ppl, step=3)
    note = mlflow_view.describe_sweep(client, parent)
    run = client.get_run(parent)
    assert run.data.tags[mlflow_view.NOTE_TAG] == note and run.info.run_name.endswith(", 2 trials")
    assert run.data.metrics["trials"] == 2 and run.data.metrics["trials_completed"] == 1
    assert "**Best trial: [lr=1e-3 warmup=1]" in note and "grid search" in note
    assert mlflow_view.trial_names(client, experiment_id, parent) == {"lr=1e-3 warmup=1", "lr=1e-2 warmup=1"}
    view = json.loads(client.get_experiment(experiment_id).tags[mlflow_view.RUNS_VIEW_TAG])
    assert {"metrics.`val_ppl`", "metrics.`finetune_acc`", "params.`optim.lr`"} <= set(view["selectedColumns"])
