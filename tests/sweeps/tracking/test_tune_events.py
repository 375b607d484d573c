"""pytest tests/sweeps/tracking/test_tune_events.py — MLflow bookkeeping that stays exact through restarts, resumes
and quotes in paths; every MLflow UI command we print or document binds to 127.0.0.1.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

from tests.support import REPO, TuneTrial, runs_of, steps_of
from trainer.result_schema import SweepIdentity


# --- MLflow bookkeeping: quotes in paths, write-once params, replayed steps, interrupted status --------------
def test_mlflow_tracking_survives_quotes_restarts_and_resumes(tmp_path):
    from sweeps.engine.tracking.tune_events import MLflowTracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_path = str(tmp_path / "it's a \"sweep\"")  # quotes broke the parent's search filter

    def driver() -> MLflowTracking:  # a fresh driver process: what --resume starts
        tracking = MLflowTracking(SweepIdentity(uri, "exp", sweep_path), {"sweep.search": "grid"}, ["optim.lr"])
        tracking.setup(total_num_samples=1)
        return tracking

    first = driver()
    trial = TuneTrial("t_00000", **{"optim.lr": 1e-3})
    first.on_trial_start(0, [trial], trial)
    for step in (4, 8):
        first.on_trial_result(0, [trial], trial, {"step": step, "val_loss": 5.0 - step / 10, "train_loss": 5.0})
    first.on_trial_recover(0, [trial], trial)  # Tune restarts the crashed trial from its step-4 checkpoint
    for step in (8, 12):  # step 8 is replayed: logged already
        first.on_trial_result(0, [trial], trial, {"step": step, "val_loss": 9.0, "train_loss": 5.0, "start_step": 4})
    first.on_experiment_end([trial])  # interrupted: never completed
    client, parents, children = runs_of(tmp_path, "exp")
    assert [p.info.status for p in parents] == ["KILLED"] and children[0].info.status == "KILLED"
    assert children[0].data.tags["gptsweep.outcome"] == "interrupted"
    assert children[0].data.tags["gptsweep.restarts"] == "1"
    assert children[0].data.tags["gptsweep.resumed_from_step"] == "4"

    # A child created just before the driver died, before its params were logged.
    orphan = client.create_run(parents[0].info.experiment_id, tags={
        "mlflow.parentRunId": first.parent_run_id, "gptsweep.trial_id": "t_00001", "gptsweep.role": "trial"})

    second = driver()  # --resume: same parent, same child, params not re-logged with another rendering
    assert second.parent_run_id == first.parent_run_id
    assert client.get_run(second.parent_run_id).info.status == "RUNNING"
    second.on_trial_start(0, [], TuneTrial("t_00001", **{"optim.lr": 3e-3}))
    assert client.get_run(orphan.info.run_id).data.params["optim.lr"] == "0.003"  # the missing ones, logged
    trial = TuneTrial("t_00000", **{"optim.lr": 0.0010000000000000002})
    second.on_trial_start(0, [trial], trial)
    for step in (12, 16):
        second.on_trial_result(0, [trial], trial, {"step": step, "val_loss": 4.0, "train_loss": 4.0, "start_step": 12})
    trial.status, trial.last_result = "TERMINATED", {"step": 16, "max_steps": 16, "val_loss": 4.0, "val_ppl": 54.6}
    second.on_trial_complete(0, [trial], trial)
    second.on_experiment_end([trial])
    client, parents, children = runs_of(tmp_path, "exp")
    child = next(c for c in children if c.info.run_id != orphan.info.run_id)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and child.info.status == "FINISHED"
    assert child.data.params["optim.lr"] == "0.001"
    assert steps_of(client, child.info.run_id) == [4, 8, 12, 16]
    assert [m.value for m in client.get_metric_history(child.info.run_id, "val_loss")
            if m.step == 8] == [5.0 - 0.8]  # the first report of step 8 is the one kept


# --- the MLflow UI binds to 127.0.0.1 -------------------------------------------------------------------
def test_every_mlflow_ui_command_binds_to_localhost(capsys):
    from sweeps.engine.console_text import print_summary as _print_summary

    plan = SimpleNamespace(tracking_uri="sqlite:////tmp/x/mlflow.db", experiment="exp", searched=["optim.lr"],
                           register=None)
    _print_summary(plan, _NoResults(), wall_s=1.0, prepared_s=0.1,
                   sweep=SweepIdentity(plan.tracking_uri, "exp", "/tmp/x/ray_results/exp_1"))
    summary = capsys.readouterr().out
    texts = {"sweep summary": summary}
    for path in {REPO / "README.md", *REPO.glob("*.md"), *REPO.glob("*/*.md")}:  # the docs a person copies from
        texts[str(path.relative_to(REPO))] = path.read_text(encoding="utf-8")
    commands = [(where, line) for where, text in texts.items() for line in text.splitlines()
                if re.search(r"\bmlflow (ui|server)\b", line)]
    assert any(where == "README.md" for where, _ in commands) and any(w == "sweep summary" for w, _ in commands)
    for where, line in commands:
        assert "--host 127.0.0.1" in line, f"{where}: {line.strip()}"


class _NoResults(list):
    """A ResultGrid of no trials, as far as the summary looks."""
    errors: list = []
    experiment_path = "/tmp/x/ray_results/exp_1"
