"""pytest tests/sweeps/test_best_trial.py — every place that names a sweep's best trial names the same one, a completed
trial, even when a pruned and an interrupted trial reached a lower val_ppl on their shorter runs.

The places: the console summary and the scratch baseline's choice (sweeps.engine.console_text.best_result over Tune's
results), the parent run's best.* tags and best_* metrics and its MLflow description (the tracking callback and
writer, on a real SQLite MLflow), and the report's best-trial line and trial table (read back from that MLflow).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from analysis.report import build_report
from analysis.runs import best_trial, fetch_sweep
from sweeps.engine.console_text import best_result, print_summary as _print_summary
from sweeps.engine.tracking.run_page import NOTE_TAG
from sweeps.engine.tracking.tune_events import MLflowTracking
from trainer import result_schema as R
from trainer.config import build_config, flatten
from trainer.result_schema import SweepIdentity

MAX_STEPS = 40
# (trial id, optim.lr, last step, final val_loss, fine-tuned, interrupted): the lowest val_ppl is the
# interrupted trial's, then the pruned one's; of the completed trials, t_best's is lower.
TRIALS = (("t_worse", 1e-3, MAX_STEPS, math.log(60.0), True, False),
          ("t_best", 2e-3, MAX_STEPS, math.log(40.0), True, False),
          ("t_pruned", 4e-3, MAX_STEPS // 2, math.log(20.0), False, False),
          ("t_interrupted", 8e-3, MAX_STEPS // 4, math.log(10.0), False, True))


class _Trial(SimpleNamespace):
    """What the tracking callback reads of a Tune Trial."""

    def __str__(self) -> str:
        return self.trial_id


def _report(step: int, loss: float, finetuned: bool) -> dict:
    """A trial's eval report as sweeps.engine.trainable sends it (the fields the readers look at)."""
    return {"step": step, "max_steps": MAX_STEPS, "val_loss": loss, "val_ppl": math.exp(loss), "train_loss": loss,
            **({"finetune_acc": 0.5 + loss / 100} if finetuned else {})}


def _run_sweep(sweep: SweepIdentity) -> list[_Trial]:
    """Tune's events of a 4-trial sweep, through the real tracking callback into MLflow."""
    base = {**flatten(build_config("smoke")), "train.max_steps": MAX_STEPS}
    tracking = MLflowTracking(sweep, {"sweep.search": "random", "sweep.preset": "smoke"}, ["optim.lr"])
    tracking.setup(total_num_samples=len(TRIALS))
    trials = []
    for trial_id, lr, step, loss, finetuned, interrupted in TRIALS:
        trial = _Trial(trial_id=trial_id, config={**base, "optim.lr": lr}, status="RUNNING", last_result={}, checkpoint=None)
        trials.append(trial)
        tracking.on_trial_start(0, trials, trial)
        trial.last_result = _report(step, loss, finetuned)
        tracking.on_trial_result(0, trials, trial, trial.last_result)
        trial.status = "TERMINATED"  # what Tune marks a stopped trial too
        if not interrupted:
            tracking.on_trial_complete(0, trials, trial)
    tracking.on_experiment_end(trials)  # t_interrupted never completed: the sweep was interrupted
    return trials


def test_every_place_names_the_completed_trial_as_best(tmp_path, capsys):
    sweep = SweepIdentity(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", str(tmp_path / "ray_results" / "exp_1"))
    trials = _run_sweep(sweep)

    client = MlflowClient(sweep.tracking_uri)
    experiment_id = client.get_experiment_by_name("exp").experiment_id
    runs = client.search_runs([experiment_id])
    outcomes = {r.data.tags[R.TRIAL_ID]: r.data.tags[R.OUTCOME] for r in runs if R.TRIAL_ID in r.data.tags}
    assert outcomes == {"t_worse": R.COMPLETED, "t_best": R.COMPLETED, "t_pruned": R.PRUNED,
                        "t_interrupted": R.INTERRUPTED}
    parent = next(r for r in runs if r.data.tags.get(R.ROLE) == R.ROLE_SWEEP)
    assert parent.data.tags[R.BEST_TRIAL_ID] == "t_best" and parent.data.tags["best.optim.lr"] == "0.002"
    assert math.isclose(parent.data.metrics["best_val_ppl"], 40.0)
    assert math.isclose(parent.data.metrics["best_val_loss"], math.log(40.0))
    assert math.isclose(parent.data.metrics["best_finetune_acc"], 0.5 + math.log(40.0) / 100)
    best_name = next(r.info.run_name for r in runs if r.data.tags.get(R.TRIAL_ID) == "t_best")
    note = parent.data.tags[NOTE_TAG]
    assert f"**Best trial: [{best_name}]" in note
    table = [line for line in note.splitlines() if line.startswith("| [")]
    assert table[0].startswith(f"| [{best_name}]")

    report_sweep = fetch_sweep(sweep.tracking_uri, "exp")
    assert best_trial(report_sweep.trials).trial_id == "t_best"
    text, _ = build_report(report_sweep, tmp_path / "report")
    assert "**Best trial t_best**" in text
    rows = [line for line in text.split("## 1.")[1].splitlines() if line.startswith("| t_")]
    assert rows[0].startswith("| t_best |")

    results = [SimpleNamespace(metrics=t.last_result, error=None, config=t.config) for t in trials]
    assert best_result(results).config["optim.lr"] == 2e-3  # the scratch baseline fine-tunes this trial's shape
    plan = SimpleNamespace(tracking_uri=sweep.tracking_uri, experiment="exp", searched=["optim.lr"], register=None)
    _print_summary(plan, _Results(results), wall_s=1.0, prepared_s=0.1, sweep=sweep)
    assert "best trial: optim.lr=2e-3: val_ppl=40.0" in capsys.readouterr().out


def test_no_completed_trial_means_no_best(tmp_path):
    """A sweep whose trials were all pruned or interrupted names no best trial rather than a short run."""
    unfinished = [SimpleNamespace(metrics=_report(MAX_STEPS // 2, 1.0, False), error=None, config={}),
                  SimpleNamespace(metrics=_report(MAX_STEPS, 2.0, True), error=RuntimeError("x"), config={})]
    assert best_result(unfinished) is None


class _Results(list):
    """A ResultGrid, as far as the summary looks."""
    errors: list = []
    experiment_path = "ray_results/exp_1"
