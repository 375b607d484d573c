"""Hyperparameter importance: fANOVA on the sweep's own Optuna study (optuna search keeps it in optuna.db), else
on a study rebuilt from the sweep's trials.

    python -m analysis.report --experiment lr_warmup      (pure functions over analysis.runs frames)

A grid or random sweep has no Optuna study, and an optuna sweep's may be out of reach (a remote sweep folder):
rebuilding one from MLflow works for every search. Its distributions come from the observed values.
"""
from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from analysis.runs import failed
from trainer import result_schema as R


@dataclass
class Importance:
    values: dict[str, float]  # key -> share of the variance of val_ppl, summing to 1; empty when skipped
    note: str  # what was computed on what, or why it was skipped


def infer_distribution(values: pd.Series):
    """FloatDistribution(log=True) for positive floats spanning more than a decade (learning rates),
    IntDistribution for integers, FloatDistribution for other numbers, CategoricalDistribution otherwise."""
    observed = values.dropna().tolist()
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in observed)
    if not numeric:
        return CategoricalDistribution(sorted({str(v) for v in observed}))
    low, high = float(min(observed)), float(max(observed))
    if all(float(v).is_integer() and not isinstance(v, (float, np.floating)) for v in observed):
        return IntDistribution(int(low), int(high))
    return FloatDistribution(low, high, log=low > 0 and high / low > 10)


def varying_keys(trials: pd.DataFrame, searched: list[str]) -> list[str]:
    return [k for k in searched if k in trials and trials[k].dropna().astype(str).nunique() > 1]


def rebuild_study(usable: pd.DataFrame, keys: list[str], value: str = "final_val_ppl"):
    """An in-memory study with one COMPLETE trial per row of `usable` (completed or pruned, with a value)."""
    distributions = {k: infer_distribution(usable[k]) for k in keys}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory"
    study = optuna.create_study(direction="minimize")
    for _, row in usable.iterrows():
        params = {k: _as_param(row[k], distributions[k]) for k in keys}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(row[value])))
    return study


def _as_param(value, distribution):
    if isinstance(distribution, CategoricalDistribution):
        return str(value)
    return int(value) if isinstance(distribution, IntDistribution) else float(value)


def _evaluator():
    """fANOVA with a fixed seed (needs scikit-learn, which mlflow brings); Optuna's default otherwise."""
    if importlib.util.find_spec("sklearn") is None:
        return None, "Optuna's default evaluator"
    # Here, not at the top: it imports scikit-learn, 2.3 s that the report's bad flags would wait for.
    from optuna.importance import FanovaImportanceEvaluator

    return FanovaImportanceEvaluator(seed=0), "fANOVA"


def study_importances(study) -> Importance | None:
    """fANOVA on the sweep's own Optuna study: its COMPLETE trials (pruned ones carry no final value), objective
    val_loss; None when too few trials completed or fewer than 2 parameters vary."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    varying = {k for k in (complete[0].params if complete else {}) if len({str(t.params[k]) for t in complete}) > 1}
    if len(complete) < 2 or len(varying) < 2:
        return None
    evaluator, name = _evaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return Importance({k: (0.0 if math.isnan(v) else float(v)) for k, v in values.items()},
                      f"{name} over the sweep's own Optuna study ({len(complete)} completed trials, target val_loss; "
                      f"pruned trials left out, as Optuna does)")


def param_importances(trials: pd.DataFrame, searched: list[str], value: str = "final_val_ppl",
                      study=None) -> Importance:
    """Importance of each varying searched key for `value`, or an empty result with the reason. An optuna
    sweep's own study is used when it can answer; other searches get a study rebuilt from the runs."""
    found = study_importances(study) if study is not None else None
    if found is not None:
        return found

    keys = varying_keys(trials, searched)
    usable = trials[~failed(trials) & trials[value].notna()] if value in trials else trials.iloc[:0]
    if len(usable) < 2:
        return Importance({}, f"skipped: {len(usable)} completed/pruned trial(s) with a {value}; need at least 2")
    if len(keys) < 2:
        return Importance({}, f"skipped: {len(keys)} searched key(s) vary ({', '.join(keys) or 'none'}); "
                              "importance needs at least 2 to compare")
    study = rebuild_study(usable, keys, value)
    evaluator, name = _evaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning and small-sample warnings; the note says it instead
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    values = {k: (0.0 if math.isnan(v) else float(v)) for k, v in values.items()}
    pruned = int((usable.outcome == R.PRUNED).sum())
    note = f"{name} over {len(usable)} trials, target {value}"
    if pruned:
        note += (f"; {pruned} of them pruned, each at its last reported value: those come from shorter runs, "
                 "which inflates the effect of whatever got them pruned")
    return Importance(values, note)
