"""Fetch one sweep from MLflow into pandas: a row per trial, the learning curves in long form, the parent's facts.

    python -m analysis.report --experiment lr_warmup      (the only caller; this module does the MLflow reads)

Everything after `fetch_sweep` is a pure function of the `Sweep` it returns, so tables and figures are tested on
DataFrames built by hand. Bad input (no database, unknown experiment or run) raises trainer.config.ConfigError.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from trainer.config import ConfigError

FLOORS = ("floor_uniform", "floor_unigram", "floor_bigram")
FLOORS_BPB = tuple(f"{name}_bpb" for name in FLOORS)  # the same floors in bits per byte
SCRATCH = ("finetune_acc_scratch", "finetune_acc_fewshot_scratch")  # parent run: fine-tuned without pretraining
CURVE_KEYS = ("val_loss", "val_ppl")
FAILED = ("diverged", "error")  # outcomes whose last value is not a result
DIVERGED_LOSS = 1e4  # trainer.loop.DIVERGED_LOSS: the placeholder val_loss of a diverged eval, not a measurement
TRIAL_COLUMNS = ("trial_id", "run_id", "run_name", "outcome", "status", "final_val_loss", "final_val_ppl",
                 "final_val_bpb", "best_val_ppl", "finetune_acc", "finetune_acc_fewshot", "steps", "max_steps")


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
    scratch: dict[str, float] = field(default_factory=dict)  # SCRATCH metrics of the parent run, when logged

    @property
    def search(self) -> str:
        return self.params.get("sweep.search", "")


def check_uri(uri: str) -> None:
    """Refuse a SQLite URI whose file is missing: MLflow would silently create an empty database there."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
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
    """The sweep's parent run: `run_id`, else the latest run tagged gptsweep.role=sweep."""
    from mlflow.exceptions import MlflowException

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
        if run.info.experiment_id != exp.experiment_id or run.data.tags.get("gptsweep.role") != "sweep":
            raise ConfigError(f"run '{run_id}' is not a sweep (parent) run of experiment '{experiment}'; "
                              "pass a parent run id (tag gptsweep.role=sweep) or drop --run")
        return run
    runs = client.search_runs([exp.experiment_id], "tags.`gptsweep.role` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ConfigError(f"experiment '{experiment}' has no sweep runs (tag gptsweep.role=sweep); "
                          f"run a sweep first, e.g. python sweeps/{experiment}.py")
    return runs[0]


def trial_rows(runs: pd.DataFrame, searched: list[str], curves: pd.DataFrame,
               max_steps: dict[str, int]) -> pd.DataFrame:
    """One row per trial from `mlflow.search_runs` output (columns params.*, metrics.*, tags.*) and the curves."""
    rows = []
    for _, run in runs.iterrows():
        trial_id = run.get("tags.gptsweep.trial_id")
        mine = curves[curves.trial_id == trial_id]
        loss = mine[mine.key == "val_loss"].sort_values("step")
        ppl = mine[mine.key == "val_ppl"].sort_values("step")
        outcome = run.get("tags.gptsweep.outcome") or "unknown"
        failed = outcome in FAILED  # its last finite eval is not where the run ended
        row = {"trial_id": trial_id, "run_id": run["run_id"], "run_name": run.get("tags.mlflow.runName"),
               "outcome": outcome, "status": run["status"],
               "final_val_loss": loss.value.iloc[-1] if len(loss) and not failed else math.nan,
               "final_val_ppl": ppl.value.iloc[-1] if len(ppl) and not failed else math.nan,
               "final_val_bpb": run.get("metrics.val_bpb", math.nan) if not failed else math.nan,
               "best_val_ppl": ppl.value.min() if len(ppl) else math.nan,
               "finetune_acc": run.get("metrics.finetune_acc", math.nan),
               "finetune_acc_fewshot": run.get("metrics.finetune_acc_fewshot", math.nan),
               "steps": int(loss.step.max()) if len(loss) else 0, "max_steps": max_steps.get(trial_id, math.nan)}
        row.update({key: _number(run.get(f"params.{key}")) for key in searched})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, *searched])


def clean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Drop the diverged placeholders (val_loss 1e4, val_ppl e^50): they are flags, not measurements."""
    placeholder = ((curves.key == "val_loss") & (curves.value >= DIVERGED_LOSS)) | \
                  ((curves.key == "val_ppl") & (curves.value >= math.exp(50.0) * 0.999))
    return curves[~placeholder].reset_index(drop=True)


def _history(client, run_id: str, trial_id: str) -> list[dict]:
    return [{"trial_id": trial_id, "key": key, "step": m.step, "value": m.value}
            for key in CURVE_KEYS for m in client.get_metric_history(run_id, key)]


def _read_artifact(client, run_id: str, path: str) -> str | None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = client.download_artifacts(run_id, path, folder)
        except Exception:  # a missing artifact (trial still running, or logged before this existed)
            return None
        return Path(local).read_text(encoding="utf-8")


def _max_steps(client, run_id: str) -> int | None:
    text = _read_artifact(client, run_id, "config.json")
    return int(json.loads(text)["train.max_steps"]) if text else None


def latest_samples(client, run_id: str) -> str | None:
    """Text of the run's samples artifact of the highest step (samples/step_000600.txt), or None."""
    files = sorted(a.path for a in client.list_artifacts(run_id, "samples") if a.path.endswith(".txt"))
    return _read_artifact(client, run_id, files[-1]) if files else None


def fetch_sweep(uri: str, experiment: str, run_id: str | None = None) -> Sweep:
    """Read the parent, its children (tags.mlflow.parentRunId), their curves, config and the best trial's samples."""
    import mlflow
    from mlflow.tracking import MlflowClient

    check_uri(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    parent = find_parent(client, experiment, run_id)
    parent_id = parent.info.run_id
    searched = [k for k in parent.data.tags.get("gptsweep.searched", "").split(",") if k]
    runs = mlflow.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'",
                              output_format="pandas")
    curves, max_steps = [], {}
    for _, run in runs.iterrows():
        trial_id = run.get("tags.gptsweep.trial_id")
        curves += _history(client, run["run_id"], trial_id)
        max_steps[trial_id] = _max_steps(client, run["run_id"])
    curves = clean_curves(pd.DataFrame(curves, columns=["trial_id", "key", "step", "value"]))
    fallback = _number(parent.data.params.get("train.max_steps"))
    max_steps = {k: v if v is not None else fallback for k, v in max_steps.items()}
    trials = trial_rows(runs, searched, curves, max_steps)
    floors = {k: v for k, v in parent.data.metrics.items() if k in FLOORS + FLOORS_BPB}
    if not floors:  # an older parent: the children carry them as well
        floors = {k[len("metrics."):]: runs[k].dropna().iloc[0] for k in runs.columns
                  if k[len("metrics."):] in FLOORS + FLOORS_BPB and runs[k].notna().any()}
    sweep = Sweep(experiment=experiment, run_id=parent_id, run_name=parent.info.run_name or parent_id,
                  status=parent.info.status, params=dict(parent.data.params), tags=dict(parent.data.tags),
                  searched=searched, trials=trials, curves=curves, floors=floors,
                  scratch={k: v for k, v in parent.data.metrics.items() if k in SCRATCH})
    best = best_trial(trials)
    if best is not None:
        text = latest_samples(client, best["run_id"])
        if text is not None:
            sweep.samples[best["trial_id"]] = text
    return sweep


def usable_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials with a final val_ppl that did not diverge or fail."""
    return trials[~trials.outcome.isin(FAILED) & trials.final_val_ppl.notna()]


def best_trial(trials: pd.DataFrame) -> pd.Series | None:
    """The usable trial with the lowest final val_ppl."""
    ok = usable_trials(trials)
    return None if ok.empty else ok.loc[ok.final_val_ppl.idxmin()]
