"""Helpers shared by the sweep benchmarks: run a real sweep through `run_sweep`, read back what its trials did.

    python -m benchmarks.sweep_overhead     python -m benchmarks.asha_savings     (the users of this module)

Per trial, the sweep's MLflow child run holds every report's `tokens_per_s` at its `step`: the loop's own
measure over the steps since the previous report (training steps only: no eval, sampling, checkpoint or
fine-tuning). So each report's training seconds are Δsteps × tokens_per_step / tokens_per_s, and a trial's are
their sum. Each report's `eval_s` is the time its evaluation (validation split + samples) took. (Tune's own
result.json is off: the runner disables Tune's file loggers.)
"""
from __future__ import annotations

import contextlib
import io
import math
import re
import sys
import time
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from sweeps.engine.launch import run_sweep
from trainer import result_schema as R

@dataclass
class Trial:
    config: dict
    steps: int  # the last reported step
    train_s: float  # seconds inside train_step, summed over the reports
    eval_s: float  # seconds evaluating (validation loss and samples), summed over the reports
    started: float  # when the trial's MLflow run began and ended (epoch seconds)
    ended: float
    val_ppl: float  # at the last report
    val_loss: dict[int, float]  # at each reported step
    outcome: str  # trainer.result_schema's outcome tag


@dataclass
class SweepRun:
    rc: int
    wall_s: float  # the whole run_sweep call: data preparation, Ray start, trials, tracking
    started: float  # epoch seconds at the call
    prepared_s: float | None  # the runner's data preparation (tokenization or token-cache load)
    trials: list[Trial]
    output: str


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = [s for s in streams if s is not None]

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run_sweep_captured(name: str, space, argv: list[str], tracking_uri: str, experiment: str,
                       tokens_per_step: int, echo: bool) -> SweepRun:
    """run_sweep (grid search by default) with its console captured; then its trials, as MLflow recorded them."""
    captured = io.StringIO()
    started_epoch, started = time.time(), time.perf_counter()
    with contextlib.redirect_stdout(_Tee(captured, sys.stderr if echo else None)):
        rc = run_sweep(name, space, argv, default_search="grid")
    wall_s = time.perf_counter() - started
    output = captured.getvalue()
    prepared = re.search(r"\(([\d.]+)s preparing data\)", output)  # "sweep finished in Ns (X.Xs preparing data)"
    trials = read_trials(tracking_uri, experiment, tokens_per_step) if rc == 0 else []
    return SweepRun(rc, wall_s, started_epoch, float(prepared.group(1)) if prepared else None, trials, output)


def read_trials(tracking_uri: str, experiment: str, tokens_per_step: int) -> list[Trial]:
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], f"tags.`{R.ROLE}` = '{R.ROLE_TRIAL}'", max_results=1000)
    trials = []
    for run in runs:
        speeds = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "tokens_per_s"))
        if not speeds:
            continue
        train_s, previous = 0.0, 0  # (the benchmarks' trials never restart from a checkpoint)
        for step, tokens_per_s in speeds:
            train_s += (step - previous) * tokens_per_step / max(tokens_per_s, 1e-9)
            previous = step
        eval_s = sum(m.value for m in client.get_metric_history(run.info.run_id, "eval_s"))
        trials.append(Trial({k: v for k, v in run.data.params.items() if k.startswith("optim.")},
                            int(speeds[-1][0]), train_s, eval_s, run.info.start_time / 1e3,
                            (run.info.end_time or run.info.start_time) / 1e3,
                            float(run.data.metrics.get("val_ppl", math.nan)),
                            {int(m.step): m.value for m in client.get_metric_history(run.info.run_id, "val_loss")},
                            run.data.tags.get(R.OUTCOME, R.UNKNOWN)))
    return sorted(trials, key=lambda t: t.started)  # the order the sweep started them in
