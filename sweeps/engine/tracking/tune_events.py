"""MLflow tracking for sweeps: a driver-side Tune callback, one parent run per sweep, one child run per trial.

    python sweeps/lr_warmup.py --mlflow-uri sqlite:////abs/path/mlflow.db   (then: mlflow ui ... --host 127.0.0.1)

Only the driver writes to MLflow (SQLite dislikes concurrent writers). The callback turns Tune's events into
journal lines (sweeps.engine.tracking.journal) that sweeps.engine.tracking.writer applies in order; while the tracking server is down the
lines wait in the sweep's folder and the trials keep training. Child outcome tags: completed (FINISHED), pruned
by ASHA (KILLED), diverged or error (FAILED), interrupted (KILLED until the sweep is resumed). The parent is
FINISHED, or KILLED while an interrupted sweep awaits --resume. A completed trial's model folder, found in its last
checkpoint, is logged to its run under model/ (sweeps.engine.tracking.model_artifacts).
"""
from __future__ import annotations

import numbers
import os
import sys
import time

from mlflow.tracking import MlflowClient
from ray import tune

from sweeps.engine.tracking import run_page as mlflow_view
from sweeps.engine.tracking.journal import Journal, Outbox, journal_folder
from sweeps.engine.tracking.model_artifacts import trial_model_dir
from sweeps.engine.tracking.writer import MlflowWriter, find_sweep_run
from trainer import result_schema as R
from trainer.result_schema import SweepIdentity
from trainer.config import config_from_params, flatten, spread_params

BEST_METRICS = ("val_ppl", "val_loss", "finetune_acc", "finetune_acc_fewshot")  # on the parent as best_<name>


def end_wait_s() -> float:
    """How long a sweep's end waits for an unreachable tracking server before leaving the rest to sweeps.engine.sync."""
    return float(os.environ.get("GPTSWEEP_TRACKING_WAIT_S", "60"))


def trial_outcome(trial) -> str:
    """The outcome of a trial that ended without an exception, from its last report."""
    return R.outcome_of(trial.last_result or {})


def best_record(trials, outcome, searched: list[str]) -> dict | None:
    """The parent run's best.* tags and best_* metrics: the best trial by trainer.result_schema.best_of."""
    top = R.best_of(trials, outcome, lambda t: (t.last_result or {}).get("val_ppl"))
    if top is None:
        return None
    config = spread_params(top.config)
    return {"tags": {R.BEST_TRIAL_ID: top.trial_id, **{f"{R.BEST_PREFIX}{k}": str(config[k]) for k in searched}},
            "metrics": _numbers({f"best_{k}": top.last_result[k] for k in BEST_METRICS if k in top.last_result})}


def mark_sweep(sweep: SweepIdentity, status: str) -> None:
    """Set the parent run's status from outside Tune (a sweep stopped before its callbacks could close it)."""
    client = MlflowClient(sweep.tracking_uri)
    experiment_entity = client.get_experiment_by_name(sweep.experiment)
    run_id = experiment_entity and find_sweep_run(client, experiment_entity.experiment_id, sweep.sweep_path)
    if run_id and client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)


def _numbers(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}


def _strings(values: dict) -> dict[str, str]:
    """Params as MLflow stores them (strings), fixed before the journal's JSON could turn a tuple into a list."""
    return {k: str(v) for k, v in values.items()}


class MLflowTracking(tune.Callback):
    def __init__(self, sweep: SweepIdentity, sweep_params: dict[str, object], searched: list[str],
                 corpus_metrics: dict[str, float] | None = None):
        self.sweep = sweep
        self.sweep_params, self.searched, self.corpus_metrics = sweep_params, searched, corpus_metrics or {}
        self.total_trials = 0  # from Tune's setup info; fewer trials at the end means the sweep was interrupted
        self.synced = True  # False when the sweep ended with journal lines MLflow has not got yet
        self._started: set[str] = set()  # trial ids started by this driver
        self._ended: set[str] = set()  # trial ids completed, pruned or errored in this driver

    # The outbox is made at setup and not pickled: Tune pickles callbacks into the experiment state.
    def __getstate__(self):
        return {**self.__dict__, "_outbox": None, "_started": set(), "_ended": set()}

    @property
    def parent_run_id(self) -> str | None:
        return self._outbox.writer.parent_id

    def setup(self, **info) -> None:
        self.total_trials = int(info.get("total_num_samples") or 0)
        sweep = self.sweep
        self._outbox = Outbox(Journal(journal_folder(sweep.sweep_path)), MlflowWriter(sweep), sweep.tracking_uri)
        self._outbox.send({"op": "sweep", "tracking_uri": sweep.tracking_uri, "experiment": sweep.experiment,
                           "sweep_path": sweep.sweep_path,
                           "run_name": mlflow_view.sweep_run_name(sweep.experiment, time.time(), self.total_trials),
                           "searched": self.searched, "params": _strings(self.sweep_params),
                           "corpus_metrics": _numbers(self.corpus_metrics)})

    def _start(self, trial) -> None:
        if trial.trial_id not in self._started:
            self._started.add(trial.trial_id)
            params = spread_params(trial.config)  # plain dotted keys, whatever the space searched
            name = mlflow_view.trial_run_name(params, self.searched, set())  # made unique by the writer
            self._outbox.send({"op": "trial", "trial_id": trial.trial_id, "run_name": name,
                               "params": _strings(params), "corpus_metrics": _numbers(self.corpus_metrics)})

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._start(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "val_loss" not in result:
            return  # a progress report between evals (trainer.loop on_progress): the console's, not MLflow's
        self._start(trial)
        self._outbox.send({"op": "result", "trial_id": trial.trial_id, "step": int(result["step"]),
                           "start_step": int(result.get("start_step") or 0), "samples": result.get("samples"),
                           "metrics": _numbers({k: result[k] for k in R.LOGGED_METRICS if k in result})})

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._start(trial)
        self._outbox.send({"op": "recover", "trial_id": trial.trial_id})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, trial_outcome(trial))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, R.ERROR)

    def _finish(self, trial, outcome: str) -> None:
        self._start(trial)
        self._ended.add(trial.trial_id)
        self._outbox.send({"op": "finish", "trial_id": trial.trial_id, "outcome": outcome, "title": str(trial),
                           "node_id": (trial.last_result or {}).get("node_id"),
                           "model_dir": trial_model_dir(trial, outcome, self._outbox.journal.path.parent),
                           "config": flatten(config_from_params(trial.config))})

    def on_experiment_end(self, trials, **info) -> None:
        """FINISHED when every trial ended; after an interrupt (Ctrl+C, SIGTERM) the unfinished trials and the
        parent are KILLED, and `--resume` sets them RUNNING again."""
        # Tune marks the trials it stops at an interrupt TERMINATED (after saving them as RUNNING for --resume),
        # so "unfinished" is: started here and never completed/errored, or never started at all.
        stopped = [t for t in trials if t.trial_id in self._started and t.trial_id not in self._ended]
        for trial in stopped:
            self._outbox.send({"op": "finish", "trial_id": trial.trial_id, "outcome": R.INTERRUPTED})
        never_started = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        interrupted = bool(stopped or never_started) or len(trials) < self.total_trials
        stopped_ids = {t.trial_id for t in stopped}
        outcome = lambda t: R.ERROR if t.status == "ERROR" else R.INTERRUPTED if t.trial_id in stopped_ids \
            else trial_outcome(t)
        self.finish_sweep(best_record(trials, outcome, self.searched), "KILLED" if interrupted else "FINISHED")

    def finish_sweep(self, best: dict | None, status: str = "FINISHED") -> None:
        """Record the best trial so far (best_record) on the parent run, close it with `status`, and wait (a
        bounded time) for MLflow to have everything; what it still lacks waits in the journal for sweeps.engine.sync."""
        self._outbox.send({"op": "end", "status": status, "best": best})
        self.synced = self._outbox.drain(end_wait_s())
        if not self.synced:
            print(f"MLflow at {self.sweep.tracking_uri} did not come back: {len(self._outbox.queue)} updates wait in "
                  f"{self._outbox.journal.path}; when it is back, run:\n  python -m sweeps.engine.sync --sweep "
                  f"{self.sweep.sweep_path}", file=sys.stderr, flush=True)
