"""The contract between what writes results and what reads them: metric names, the diverged placeholders,
trial outcomes, MLflow tag names, the one rule for "best" and how a number is written. Plain Python, no
dependencies.

    python sweeps/lr_warmup.py  →  python -m analysis.report --experiment lr_warmup   (both sides use these names)

Writers: trainer.loop (metrics), sweeps.engine.tracking.tune_events (MLflow runs and tags). Readers: analysis, benchmarks.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

# What every eval reports (trainer.loop.Pretrainer.run) and MLflow logs at that step; then once at the end.
EVAL_METRICS = ("train_loss", "val_loss", "val_ppl", "val_bpb", "val_acc", "lr", "tokens_per_s", "eval_s",
                "diverged")
FINAL_METRICS = ("finetune_acc", "finetune_acc_fewshot")
# The compute ledger (trainer/compute.py), cumulative at every eval: what the scaling fit reads.
LEDGER_METRICS = ("tokens", "flops", "n_params", "n_params_non_embedding", "wall_s", "device_s")
LOGGED_METRICS = EVAL_METRICS + FINAL_METRICS + LEDGER_METRICS

# A diverged run reports these for its last eval: finite, so Tune, Optuna and MLflow rank it last instead of
# choking on NaN. They are flags, not measurements: readers drop them (is_placeholder).
MAX_LOG_PPL = 50.0  # val_ppl = exp(min(val_loss, 50)): the cap keeps it finite
DIVERGED_LOSS = 1e4
DIVERGED_PPL = math.exp(MAX_LOG_PPL)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, MAX_LOG_PPL))


def is_placeholder(key: str, value: float) -> bool:
    """True for the val_loss / val_bpb / val_ppl a diverged eval reports instead of a measurement."""
    if key == "val_ppl":
        return value >= DIVERGED_PPL * 0.999
    return key in ("val_loss", "val_bpb") and value >= DIVERGED_LOSS


# Outcomes of a trial (MLflow tag OUTCOME). A failed one's last value is not a result.
COMPLETED, PRUNED, DIVERGED, ERROR, INTERRUPTED, RUNNING = (
    "completed", "pruned", "diverged", "error", "interrupted", "running")
OUTCOMES = (COMPLETED, PRUNED, DIVERGED, ERROR, INTERRUPTED, RUNNING)
UNKNOWN = "unknown"  # what a reader shows for a trial run without the tag
FAILED_OUTCOMES = (DIVERGED, ERROR)


def outcome_of(last_metrics: Mapping) -> str:
    """The outcome of a trial that ended without an exception, from its last report: it carries `step` and
    `max_steps` (sweeps.engine.trainable); one without max_steps did not complete."""
    if last_metrics.get("diverged"):
        return DIVERGED
    return COMPLETED if last_metrics.get("step", 0) >= last_metrics.get("max_steps", math.inf) else PRUNED


def counts_for_best(outcome: str, val_ppl: float | None) -> bool:
    """A trial that completed its run (not pruned on a shorter budget, not diverged, not interrupted) with a
    measured val_ppl."""
    return outcome == COMPLETED and val_ppl is not None and math.isfinite(val_ppl)


Trial = TypeVar("Trial")


def best_of(trials: Iterable[Trial], outcome: Callable[[Trial], str],
            val_ppl: Callable[[Trial], float | None]) -> Trial | None:
    """The one rule for "best": the lowest val_ppl among the trials that count (counts_for_best), else None.
    Every place that names a best trial asks this: the sweep's summary, the parent run's best.* tags and best_*
    metrics, its MLflow description, the scratch baseline and the report."""
    counted = [t for t in trials if counts_for_best(outcome(t), val_ppl(t))]
    return min(counted, key=val_ppl, default=None)


def rank_key(outcome: str, val_ppl: float | None) -> tuple[int, float]:
    """Sort key of a trial table, best first: the trials that count for best, then the other measured ones
    (pruned, interrupted, running), then the failed; by val_ppl within each. Its first row is best_of's."""
    group = 0 if counts_for_best(outcome, val_ppl) else 2 if outcome in FAILED_OUTCOMES else 1
    return group, val_ppl if val_ppl is not None and math.isfinite(val_ppl) else math.inf


def format_value(value: object) -> str:
    """How every table, run name, figure and description writes a value: 3 significant digits (2.65e-3, 0.1,
    38.5), whole numbers below a million as they are (3209), '–' for a missing one."""
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "–" if value is None else str(value)
    value = float(value)
    if not math.isfinite(value):
        return "–" if math.isnan(value) else str(value)
    if abs(value) < 1e6 and (value.is_integer() or abs(value) >= 100):
        return str(round(value))
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e6):
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{value:.3g}"


# MLflow tags. The parent run of a sweep carries ROLE=sweep, SWEEP_PATH, SWEEP_KEY, SEARCHED and, once known,
# BEST_TRIAL_ID and BEST_PREFIX + each searched key; every trial's child run ROLE=trial, TRIAL_ID and OUTCOME.
ROLE, ROLE_SWEEP, ROLE_TRIAL = "gptsweep.role", "sweep", "trial"
SWEEP_PATH, SWEEP_KEY, SEARCHED = "gptsweep.sweep_path", "gptsweep.sweep_key", "gptsweep.searched"
TRIAL_ID, OUTCOME, NODE_ID = "gptsweep.trial_id", "gptsweep.outcome", "gptsweep.node_id"
RESTARTS, RESUMED_FROM_STEP = "gptsweep.restarts", "gptsweep.resumed_from_step"
BEST_TRIAL_ID, BEST_PREFIX = "gptsweep.best_trial_id", "best."
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own nesting tag
# On the parent: `runs:/RUN_ID/model`, the best trial's model folder (sweeps.engine.tracking.registry).
BEST_MODEL_URI = "gptsweep.best_model_uri"


# Where a sweep's records live, for the sweep that writes them and the report that reads them.
@dataclass(frozen=True)
class SweepIdentity:
    """Which sweep a record belongs to: the MLflow store, the experiment, and the sweep's Tune folder, whose path
    is the sweep's key (a grown sweep's later parts keep the first part's)."""
    tracking_uri: str
    experiment: str
    sweep_path: str


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a sqlite:/// MLflow URI (sqlite:////abs/path is absolute), else None."""
    return Path(tracking_uri[len("sqlite:///"):]) if tracking_uri.startswith("sqlite:///") else None


def study_location(tracking_uri: str, sweep_path: str) -> tuple[Path, str] | None:
    """(optuna.db file, study name) of a sweep's Optuna study: beside the MLflow SQLite database, else in the
    sweep's Tune folder; None when that folder is remote. The study is named after the folder."""
    database = sqlite_path(tracking_uri)
    folder = database.parent if database is not None else (None if "://" in sweep_path else Path(sweep_path))
    return None if folder is None else (folder / "optuna.db", Path(sweep_path).name)
