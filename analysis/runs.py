"""Fetch one sweep from MLflow into pandas: a row per trial, the learning curves in long form, the parent's facts.

    python -m analysis.report --experiment lr_warmup      (the only caller; this module does the MLflow reads)

Everything after `fetch_sweep` is a pure function of the `Sweep` it returns, so tables and figures are tested on
DataFrames built by hand. Bad input (no database, unknown experiment or run) raises trainer.config.ConfigError.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd

from trainer import result_schema as R
from trainer.config import ConfigError, build_config, flatten
from trainer.telemetry import disable_telemetry

# MLflow is imported inside the two functions that read it: ~5 s, which every analysis command's bad flags
# would otherwise wait for (and fetch_sweep switches its telemetry off before it is imported).

FLOORS = ("floor_uniform", "floor_unigram", "floor_bigram")
FLOORS_BPB = tuple(f"{name}_bpb" for name in FLOORS)  # the same floors in bits per byte
SCRATCH = ("finetune_acc_scratch", "finetune_acc_fewshot_scratch")  # parent run: fine-tuned without pretraining
CURVE_KEYS = ("val_loss", "val_ppl")
LEDGER = R.LEDGER_METRICS  # trainer/compute.py
TRIAL_COLUMNS = ("trial_id", "run_id", "run_name", "outcome", "status", "final_val_loss", "final_val_ppl",
                 "final_val_bpb", "best_val_ppl", "finetune_acc", "finetune_acc_fewshot", "steps", "max_steps", *LEDGER)


@dataclass
class Sweep:
    """One sweep: the parent run's facts, `trials` (one row per trial; searched keys are columns of their own)
    and `curves` (long form: trial_id, key, step, value)."""
    experiment: str
    run_id: str
    run_name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    searched: list[str]
    trials: pd.DataFrame
    curves: pd.DataFrame
    floors: dict[str, float] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)  # trial_id -> text of its latest samples artifact
    study: object | None = None  # the sweep's own Optuna study (optuna search), when its optuna.db is readable
    scratch: dict[str, float] = field(default_factory=dict)  # SCRATCH metrics of the parent run, when logged

    @property
    def search(self) -> str:
        return self.params.get("sweep.search", "")


def check_uri(uri: str) -> None:
    """Refuse a SQLite URI whose file is missing: MLflow would silently create an empty database there."""
    path = R.sqlite_path(uri)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"no MLflow database at {path}; run a sweep from that folder first "
                              f"or pass --mlflow-uri sqlite:////abs/path/mlflow.db")
    elif "://" not in uri and not Path(uri).exists():
        raise ConfigError(f"MLflow URI {uri!r} names no existing folder; "
                          "pass --mlflow-uri sqlite:////abs/path/mlflow.db")


def _number(text):
    """MLflow params are strings: give numbers back as int/float, anything else unchanged."""
    if not isinstance(text, str):
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def find_parent(client, experiment: str, run_id: str | None):
    """The sweep's parent run: `run_id`, else the latest run tagged gptsweep.role=sweep (trainer.result_schema)."""
    from mlflow.exceptions import MlflowException  # (see the note at the top)

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"no experiment '{experiment}' in this MLflow store; choose one of: "
                          f"{', '.join(names) or '(none: run a sweep first)'}")
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise ConfigError(f"no run with id '{run_id}'; drop --run to take the latest sweep of "
                              f"'{experiment}'") from None
        if run.info.experiment_id != exp.experiment_id or run.data.tags.get(R.ROLE) != R.ROLE_SWEEP:
            raise ConfigError(f"run '{run_id}' is not a sweep (parent) run of experiment '{experiment}'; "
                              "pass a parent run id (tag gptsweep.role=sweep) or drop --run")
        return run
    runs = client.search_runs([exp.experiment_id], f"tags.`{R.ROLE}` = '{R.ROLE_SWEEP}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ConfigError(f"experiment '{experiment}' has no sweep runs (tag gptsweep.role=sweep); "
                          f"run a sweep first, e.g. python sweeps/{experiment}.py")
    return runs[0]


def trial_rows(runs: pd.DataFrame, searched: list[str], curves: pd.DataFrame) -> pd.DataFrame:
    """One row per trial from `mlflow.search_runs` output (columns params.*, metrics.*, tags.*) and the curves."""
    rows = []
    for _, run in runs.iterrows():
        trial_id = run.get(f"tags.{R.TRIAL_ID}")
        mine = curves[curves.trial_id == trial_id]
        loss = mine[mine.key == "val_loss"].sort_values("step")
        ppl = mine[mine.key == "val_ppl"].sort_values("step")
        outcome = run.get(f"tags.{R.OUTCOME}") or R.UNKNOWN
        failed = outcome in R.FAILED_OUTCOMES  # its last finite eval is not where the run ended
        row = {"trial_id": trial_id, "run_id": run["run_id"], "run_name": run.get("tags.mlflow.runName"),
               "outcome": outcome, "status": run["status"],
               "final_val_loss": loss.value.iloc[-1] if len(loss) and not failed else math.nan,
               "final_val_ppl": ppl.value.iloc[-1] if len(ppl) and not failed else math.nan,
               "final_val_bpb": run.get("metrics.val_bpb", math.nan) if not failed else math.nan,
               "best_val_ppl": ppl.value.min() if len(ppl) else math.nan,
               "finetune_acc": run.get("metrics.finetune_acc", math.nan),
               "finetune_acc_fewshot": run.get("metrics.finetune_acc_fewshot", math.nan),
               "steps": int(loss.step.max()) if len(loss) else 0,
               "max_steps": _number(run.get("params.train.max_steps", math.nan))}
        row.update({key: run.get(f"metrics.{key}", math.nan) for key in LEDGER})  # each one's last value
        row.update({key: _number(run.get(f"params.{key}")) for key in searched})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, *searched])


def clean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Drop the diverged placeholders (val_loss 1e4, val_ppl e^50): they are flags, not measurements."""
    placeholder = [R.is_placeholder(key, value) for key, value in zip(curves.key, curves.value)]
    return curves[~pd.Series(placeholder, index=curves.index, dtype=bool)].reset_index(drop=True)


def _history(client, run_id: str, trial_id: str) -> list[dict]:
    return [{"trial_id": trial_id, "key": key, "step": m.step, "value": m.value}
            for key in CURVE_KEYS for m in client.get_metric_history(run_id, key)]


def _read_artifact(client, run_id: str, path: str) -> str | None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = client.download_artifacts(run_id, path, folder)
        except Exception:  # a missing artifact (a trial still running)
            return None
        return Path(local).read_text(encoding="utf-8")


def latest_samples(client, run_id: str) -> str | None:
    """Text of the run's samples artifact of the highest step (samples/step_000600.txt), or None."""
    files = sorted(a.path for a in client.list_artifacts(run_id, "samples") if a.path.endswith(".txt"))
    return _read_artifact(client, run_id, files[-1]) if files else None


def fetch_sweep(uri: str, experiment: str, run_id: str | None = None) -> Sweep:
    """Read the parent, its children (tags.mlflow.parentRunId), their curves and the best trial's samples."""
    disable_telemetry()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per downloaded samples file
    import mlflow  # (see the note at the top)
    from mlflow.tracking import MlflowClient

    check_uri(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    parent = find_parent(client, experiment, run_id)
    parent_id = parent.info.run_id
    searched = [k for k in parent.data.tags.get(R.SEARCHED, "").split(",") if k]
    runs = mlflow.search_runs([parent.info.experiment_id], f"tags.`{R.PARENT_RUN_ID}` = '{parent_id}'",
                              output_format="pandas")
    curves = [point for _, run in runs.iterrows()
              for point in _history(client, run["run_id"], run.get(f"tags.{R.TRIAL_ID}"))]
    curves = clean_curves(pd.DataFrame(curves, columns=["trial_id", "key", "step", "value"]))
    trials = trial_rows(runs, searched, curves)
    floors = {k: v for k, v in parent.data.metrics.items() if k in FLOORS + FLOORS_BPB}
    sweep = Sweep(experiment=experiment, run_id=parent_id, run_name=parent.info.run_name or parent_id,
                  status=parent.info.status, params=dict(parent.data.params), tags=dict(parent.data.tags),
                  searched=searched, trials=trials, curves=curves, floors=floors,
                  study=load_study(uri, parent.data.tags.get(R.SWEEP_PATH, "")),
                  scratch={k: v for k, v in parent.data.metrics.items() if k in SCRATCH})
    best = best_trial(trials)
    if best is not None:
        text = latest_samples(client, best["run_id"])
        if text is not None:
            sweep.samples[best["trial_id"]] = text
    return sweep


def load_study(tracking_uri: str, sweep_path: str):
    """The Optuna study the sweep's searcher kept (trainer.result_schema.study_location), or None."""
    location = R.study_location(tracking_uri, sweep_path) if sweep_path else None
    if location is None or not location[0].is_file():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=location[1], storage=f"sqlite:///{location[0]}")
    except KeyError:  # no such study there: a grid or random sweep
        return None


def usable_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials with a final val_ppl that did not diverge or fail (pruned ones included: shorter runs)."""
    return trials[~failed(trials) & trials.final_val_ppl.notna()]


def failed(trials: pd.DataFrame) -> pd.Series:
    """Per trial: did it diverge or error (its last value is then not a result)?"""
    return trials.outcome.isin(R.FAILED_OUTCOMES)


def best_trial(trials: pd.DataFrame) -> pd.Series | None:
    """The sweep's best trial row (trainer.result_schema.best_of on its final val_ppl), or None."""
    return R.best_of((row for _, row in trials.iterrows()), lambda row: row.outcome, lambda row: row.final_val_ppl)


def report_folder(sweep: Sweep) -> Path:
    """reports/<experiment>/<the sweep's Tune folder name>: the run's display name has spaces and changes on
    --resume; the folder name (lr_warmup_20261202-035300) does not."""
    return Path("reports") / sweep.experiment / (Path(sweep.tags.get(R.SWEEP_PATH, "")).name or sweep.run_id)


def sweep_preset(sweep: Sweep) -> str:
    """The preset the sweep's trials started from (its parent's param sweep.preset)."""
    return str(sweep.params["sweep.preset"])


NOT_A_MODEL_SETTING = ("data.", "sweep.", "train.seed", "train.threads", "model.vocab_size")


def changed_settings(sweep: Sweep) -> dict[str, str]:
    """The fixed settings in which the sweep differed from its preset (its --set values): what a `python -m
    trainer` line for the same recipe needs. The parent logs every field; data, seed and threads are left out."""
    base = flatten(build_config(sweep_preset(sweep)))
    return {k: v for k, v in sweep.params.items() if k in base and str(v) != str(base[k])
            and not k.startswith(NOT_A_MODEL_SETTING) and k not in sweep.searched}
