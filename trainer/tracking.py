"""MLflow tracking for sweeps: a driver-side Tune callback, one parent run per sweep, one child run per trial.

    python sweeps/lr_warmup.py --mlflow-uri sqlite:////abs/path/mlflow.db   (then: mlflow ui ... --host 127.0.0.1)

Only the driver writes to MLflow (SQLite dislikes concurrent writers). Runs are found again by tags rather than
remembered, so a resumed sweep or a restarted trial continues its runs instead of duplicating them:
the parent carries `gptsweep.sweep_path` (the Tune experiment folder) and `gptsweep.sweep_key` (its hash, which
is what searches use: a path may hold quotes), each child `gptsweep.trial_id`. A trial that Tune restarts or a
resumed sweep re-runs reports again from its last checkpoint: steps already logged are skipped, so every metric's
step axis stays strictly increasing, and params are logged once (MLflow params are write-once).
Child outcome tags: completed (FINISHED), pruned by ASHA (KILLED), diverged or error (FAILED), interrupted
(KILLED until the sweep is resumed). The parent is FINISHED, or KILLED while an interrupted sweep awaits --resume.
"""
from __future__ import annotations

import hashlib
import numbers
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from ray import tune

from sweeps import mlflow_view
from trainer.config import config_from_params, flatten

METRICS = ("train_loss", "val_loss", "val_ppl", "val_acc", "lr", "tokens_per_s", "eval_s", "finetune_acc",
           "finetune_acc_fewshot", "diverged")


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Create the experiment from the driver before anything else touches a fresh database (schema race)."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:  # made before it had a kind and a description: add them (never overwrite)
        for key, value in mlflow_view.experiment_tags(name).items():
            if key not in experiment.tags:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    artifacts = None
    if tracking_uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in the trial's cwd
        artifacts = (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifacts, tags=mlflow_view.experiment_tags(name))


def trial_outcome(trial) -> tuple[str, str]:
    """(outcome tag, MLflow status) of a trial that ended without an exception."""
    last = trial.last_result or {}
    if last.get("diverged"):
        return "diverged", RunStatus.to_string(RunStatus.FAILED)
    max_steps = config_from_params(trial.config).train.max_steps
    if last.get("step", 0) >= max_steps:
        return "completed", RunStatus.to_string(RunStatus.FINISHED)
    return "pruned", RunStatus.to_string(RunStatus.KILLED)


def sweep_key(sweep_path: str) -> str:
    """A search-safe id of a sweep: MLflow filter strings have no escape for quotes, paths may hold them."""
    return hashlib.sha256(str(sweep_path).encode()).hexdigest()[:32]


def find_sweep_run(client: MlflowClient, experiment_id: str, sweep_path: str) -> str | None:
    found = client.search_runs([experiment_id], f"tags.`gptsweep.sweep_key` = '{sweep_key(sweep_path)}'",
                               max_results=1)
    return found[0].info.run_id if found else None


def mark_sweep(tracking_uri: str, experiment: str, sweep_path: str, status: str) -> None:
    """Set the parent run's status from outside Tune (a sweep stopped before its callbacks could close it)."""
    client = MlflowClient(tracking_uri)
    experiment_entity = client.get_experiment_by_name(experiment)
    run_id = experiment_entity and find_sweep_run(client, experiment_entity.experiment_id, sweep_path)
    if run_id and client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)


class MLflowTracking(tune.Callback):
    def __init__(self, tracking_uri: str, experiment: str, sweep_path: str, sweep_params: dict[str, object],
                 searched: list[str], corpus_metrics: dict[str, float] | None = None):
        self.tracking_uri, self.experiment, self.sweep_path = tracking_uri, experiment, sweep_path
        self.sweep_params, self.searched, self.corpus_metrics = sweep_params, searched, corpus_metrics or {}
        self.experiment_id: str | None = None  # set, like parent_run_id, by setup() on every driver start
        self.parent_run_id: str | None = None
        self.total_trials = 0  # from Tune's setup info; fewer trials at the end means the sweep was interrupted
        self._children: dict[str, str] = {}  # trial id → run id, for the trials started by this driver
        self._ended: set[str] = set()  # trial ids completed, pruned or errored in this driver
        self._logged_step: dict[str, int] = {}  # trial id → last step logged (a restarted trial replays steps)
        self._start_step: dict[str, int] = {}
        self._names: set[str] = set()  # the trial run names of this sweep, kept unique

    # The client is made lazily and not pickled: Tune pickles callbacks into the experiment state.
    def __getstate__(self):
        return {**self.__dict__, "_client": None, "_children": {}, "_ended": set(), "_logged_step": {},
                "_start_step": {}, "_names": set(), "parent_run_id": None}

    @property
    def client(self) -> MlflowClient:
        if getattr(self, "_client", None) is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def setup(self, **info) -> None:
        self.total_trials = int(info.get("total_num_samples") or 0)
        self.experiment_id = ensure_experiment(self.tracking_uri, self.experiment)
        self.parent_run_id = find_sweep_run(self.client, self.experiment_id, self.sweep_path)
        if self.parent_run_id is not None:  # a resumed sweep: the same parent, running again
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self._names = mlflow_view.trial_names(self.client, self.experiment_id, self.parent_run_id)
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=mlflow_view.sweep_run_name(self.experiment, time.time(),
                                                                        self.total_trials),
                tags={"gptsweep.sweep_path": self.sweep_path, "gptsweep.role": "sweep",
                      "gptsweep.sweep_key": sweep_key(self.sweep_path), "gptsweep.searched": ",".join(self.searched)})
            self.parent_run_id = run.info.run_id
            self._log_metrics(self.parent_run_id, self.corpus_metrics, step=0)
        self._log_params_once(self.parent_run_id, self.sweep_params)

    def _child(self, trial) -> str:
        if trial.trial_id in self._children:
            return self._children[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id], f"tags.`gptsweep.trial_id` = '{trial.trial_id}' and "
                             f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'", max_results=1)
        if found:  # a resumed sweep: continue the run, after the last step it has
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "gptsweep.outcome", "running")
            history = self.client.get_metric_history(run_id, "train_loss")
            self._logged_step[trial.trial_id] = max((m.step for m in history), default=-1)
        else:
            name = mlflow_view.trial_run_name(trial.config, self.searched, self._names)
            self._names.add(name)
            run_id = self.client.create_run(self.experiment_id, run_name=name, tags={
                "mlflow.parentRunId": self.parent_run_id, "gptsweep.trial_id": trial.trial_id,
                "gptsweep.role": "trial", "gptsweep.outcome": "running"}).info.run_id
            self._log_metrics(run_id, self.corpus_metrics, step=0)
        self._log_params_once(run_id, trial.config)
        self._children[trial.trial_id] = run_id
        return run_id

    def _log_params_once(self, run_id: str, values: dict) -> None:
        """Log the params the run lacks. MLflow raises on a param re-logged with another value, and a resumed
        run may see one rendered differently (or a run created just before a crash may have none yet)."""
        have = self.client.get_run(run_id).data.params
        missing = [p for p in _params(values) if p.key not in have]
        if missing:
            self.client.log_batch(run_id, params=missing)

    def _log_metrics(self, run_id: str, values: dict, step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()
                   if isinstance(v, numbers.Real) and not isinstance(v, bool)]  # numpy scalars count too
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._child(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self._child(trial)
        step = int(result["step"])
        start = int(result.get("start_step") or 0)
        if start and self._start_step.get(trial.trial_id) != start:  # began from a checkpoint: restart or resume
            self._start_step[trial.trial_id] = start
            self.client.set_tag(run_id, "gptsweep.resumed_from_step", str(start))
        if step <= self._logged_step.get(trial.trial_id, -1):
            return  # replayed from an older checkpoint than the last logged step: logged already
        self._logged_step[trial.trial_id] = step
        self._log_metrics(run_id, {k: result[k] for k in METRICS if k in result}, step)
        if result.get("samples"):
            self.client.log_text(run_id, "\n\n---\n\n".join(result["samples"]), f"samples/step_{step:06d}.txt")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """Tune restarts a crashed trial (FailureConfig.max_failures): count it; the run itself continues."""
        run_id = self._child(trial)
        restarts = int(self.client.get_run(run_id).data.tags.get("gptsweep.restarts", "0")) + 1
        self.client.set_tag(run_id, "gptsweep.restarts", str(restarts))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        outcome, status = trial_outcome(trial)
        self._finish(trial, outcome, status)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, "error", RunStatus.to_string(RunStatus.FAILED))

    def _finish(self, trial, outcome: str, status: str) -> None:
        run_id = self._child(trial)
        self._ended.add(trial.trial_id)
        self.client.set_tag(run_id, "gptsweep.outcome", outcome)
        if trial.last_result and trial.last_result.get("node_id"):
            self.client.set_tag(run_id, "gptsweep.node_id", trial.last_result["node_id"])
        config = flatten(config_from_params(trial.config))
        self.client.log_dict(run_id, config, "config.json")
        self._log_learning_curve(run_id, str(trial))
        self.client.set_terminated(run_id, status)

    def _log_learning_curve(self, run_id: str, title: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for key in ("train_loss", "val_loss"):
            history = sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))
            if history:
                ax.plot(*zip(*history), marker="o", markersize=3, label=key)
        ax.set(xlabel="training step", ylabel="loss (nats/token)", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
        self.client.log_figure(run_id, fig, "learning_curve.png")
        plt.close(fig)

    def on_experiment_end(self, trials, **info) -> None:
        """FINISHED when every trial ended; after an interrupt (Ctrl+C, SIGTERM) the unfinished trials and the
        parent are KILLED, and `--resume` sets them RUNNING again."""
        # Tune marks the trials it stops at an interrupt TERMINATED (after saving them as RUNNING for --resume),
        # so "unfinished" is: started here and never completed/errored, or never started at all.
        stopped = [t for t in trials if t.trial_id in self._children and t.trial_id not in self._ended]
        for trial in stopped:
            run_id = self._children[trial.trial_id]
            self.client.set_tag(run_id, "gptsweep.outcome", "interrupted")
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        never_started = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        interrupted = bool(stopped or never_started) or len(trials) < self.total_trials
        self.finish_sweep(trials, status="KILLED" if interrupted else "FINISHED")

    def finish_sweep(self, trials, status: str = "FINISHED") -> None:
        """Record the best trial so far on the parent run and close it with `status`."""
        if self.parent_run_id is None:
            return
        ranked = [t for t in trials if t.last_result and "val_ppl" in t.last_result
                  and not t.last_result.get("diverged")]
        if ranked:
            best = min(ranked, key=lambda t: t.last_result["val_ppl"])
            # Tags, not params: MLflow params are write-once and a resumed sweep may find a new best trial.
            best_tags = {f"best.{k}": str(best.config[k]) for k in self.searched}
            for key, value in {"gptsweep.best_trial_id": best.trial_id, **best_tags}.items():
                self.client.set_tag(self.parent_run_id, key, value)
            self._log_metrics(self.parent_run_id, {f"best_{k}": best.last_result[k] for k in
                                                   ("val_ppl", "val_loss", "finetune_acc", "finetune_acc_fewshot")
                                                   if k in best.last_result}, step=0)
        mlflow_view.describe_sweep(self.client, self.parent_run_id)  # name, note and trial counts from MLflow
        self.client.set_terminated(self.parent_run_id, status)


def _params(config: dict) -> list[Param]:
    return [Param(k, str(v)) for k, v in sorted(config.items())]

