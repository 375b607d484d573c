"""pytest tests/sweeps/test_scaling_params.py — the scaling sweep's grid points (a model size, a token budget: several
dotted keys each) reach MLflow and the scaling fit as plain dotted keys, the one interface of every other sweep.
"""
from __future__ import annotations

from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from analysis.runs import fetch_sweep
from analysis.scaling_law import trial_config
from sweeps.engine.plan import searched_keys
from sweeps.engine.tracking.tune_events import MLflowTracking
from sweeps.scaling import space
from trainer import result_schema as R
from trainer.config import build_config, flatten
from trainer.result_schema import SweepIdentity
from trainer.sizes import budget_params, size_params


def test_a_size_and_a_budget_are_logged_and_read_back_as_dotted_keys(tmp_path):
    cfg = build_config("smoke")
    searched = searched_keys(space(cfg))
    assert {"model.d_model", "model.n_layers", "optim.lr", "train.max_steps"} <= set(searched)
    assert all(key.split(".")[0] in ("model", "optim", "train") for key in searched)

    sweep = SweepIdentity(f"sqlite:///{tmp_path / 'mlflow.db'}", "scaling", str(tmp_path / "scaling_1"))
    tracking = MLflowTracking(sweep, {**flatten(cfg), "sweep.preset": "smoke", "sweep.search": "grid"}, searched)
    tracking.setup(total_num_samples=1)
    config = {**flatten(cfg), "scaling.model": size_params(48, 1), "scaling.budget": budget_params(30)}
    trial = SimpleNamespace(trial_id="t_0", config=config, status="TERMINATED", checkpoint=None,
                            last_result={"step": 30, "max_steps": 30, "val_loss": 4.0, "val_ppl": 54.6})
    tracking.on_trial_start(0, [trial], trial)
    tracking.on_trial_result(0, [trial], trial, trial.last_result)
    tracking.on_trial_complete(0, [trial], trial)
    tracking.on_experiment_end([trial])

    client = MlflowClient(sweep.tracking_uri)
    child = client.search_runs([client.get_experiment_by_name("scaling").experiment_id],
                               f"tags.`{R.TRIAL_ID}` = 't_0'")[0]
    assert not any(key.startswith("scaling.") for key in child.data.params)
    assert (child.data.params["model.d_model"], child.data.params["train.max_steps"]) == ("48", "30")
    assert child.info.run_name.startswith("d_model=48 n_layers=1")
    read = fetch_sweep(sweep.tracking_uri, "scaling")
    trial_cfg = trial_config(read, read.trials.iloc[0])
    assert (trial_cfg.model.d_model, trial_cfg.model.n_layers, trial_cfg.train.max_steps) == (48, 1, 30)
