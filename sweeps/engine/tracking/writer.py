"""Applies one journal line of a sweep to MLflow: the parent run, a trial's child run, its metrics and its end
(with its model folder, sweeps.engine.tracking.model_artifacts).

    python -m sweeps.engine.sync --sweep PATH       (and every sweep's tracking callback, live)

Runs are found again by tags rather than remembered, so a replay, a resumed sweep or a restarted trial continues
its runs instead of duplicating them: the parent carries `gptsweep.sweep_key` (a hash of its Tune folder: what
searches use, since a path may hold quotes), each child `gptsweep.trial_id`. A trial that Tune restarts reports
again from its last checkpoint: steps already logged are skipped, so every metric's step axis stays strictly
increasing; params are logged once (MLflow params are write-once).
"""
from __future__ import annotations

import hashlib
import numbers
import time

from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from sweeps.engine.tracking import run_page as mlflow_view
from sweeps.engine.tracking.journal import is_unreachable
from sweeps.engine.tracking.model_artifacts import log_model_folder, tag_best_model
from trainer import result_schema as R
from trainer.result_schema import SweepIdentity

STATUS = {R.COMPLETED: "FINISHED", R.PRUNED: "KILLED", R.DIVERGED: "FAILED", R.ERROR: "FAILED",
          R.INTERRUPTED: "KILLED"}  # MLflow run status of each outcome


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Create the experiment from the driver before anything else touches a fresh database (schema race)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:  # made before it had a kind and a description: add them (never overwrite)
        for key, value in mlflow_view.experiment_tags(name).items():
            if key not in experiment.tags:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    database = R.sqlite_path(client.tracking_uri)  # keep artifacts beside the database, not in the trial's cwd
    artifacts = (database.parent / "mlartifacts").as_uri() if database is not None else None
    return client.create_experiment(name, artifact_location=artifacts, tags=mlflow_view.experiment_tags(name))


def sweep_key(sweep_path: str) -> str:
    """A search-safe id of a sweep: MLflow filter strings have no escape for quotes, paths may hold them."""
    return hashlib.sha256(str(sweep_path).encode()).hexdigest()[:32]


def find_sweep_run(client: MlflowClient, experiment_id: str, sweep_path: str) -> str | None:
    found = client.search_runs([experiment_id], f"tags.`{R.SWEEP_KEY}` = '{sweep_key(sweep_path)}'",
                               max_results=1)
    return found[0].info.run_id if found else None


def sweep_urls(sweep: SweepIdentity) -> tuple[str, str] | None:
    """The URLs of the experiment's sweep view and of the sweep's parent run in `mlflow ui` (the tracking server
    itself for an http(s) URI); None if MLflow has no such sweep."""
    tracking_uri = sweep.tracking_uri
    database = R.sqlite_path(tracking_uri)
    if database is not None and not database.is_file():
        return None  # nothing was written there (and a client would create an empty database)
    client = MlflowClient(tracking_uri)
    try:
        found = client.get_experiment_by_name(sweep.experiment)
        run_id = found and find_sweep_run(client, found.experiment_id, sweep.sweep_path)
    except Exception as error:  # a tracking server that is down: the summary says where the journal waits
        if not is_unreachable(error):
            raise
        return None
    if not run_id:
        return None
    address = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else mlflow_view.UI_ADDRESS
    return (mlflow_view.ui_url(found.experiment_id, address=address),
            mlflow_view.ui_url(found.experiment_id, run_id, address))


class MlflowWriter:
    """The MLflow side of one sweep; `apply(op)` for each journal line, in order."""

    def __init__(self, sweep: SweepIdentity):
        self.sweep = sweep
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self.parent_id: str | None = None
        self._children: dict[str, str] = {}  # trial id → run id
        self._logged_step: dict[str, int] = {}  # trial id → last step logged (a restarted trial replays steps)
        self._start_step: dict[str, int] = {}
        self._names: set[str] | None = None  # trial run names of this sweep (read from MLflow once), kept unique

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.sweep.tracking_uri)
        return self._client

    def apply(self, op: dict) -> None:
        getattr(self, f"_{op['op']}")(op)

    # --- finding runs again ------------------------------------------------------------------------------
    def _experiment(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = ensure_experiment(self.client, self.sweep.experiment)
        return self._experiment_id

    def _parent(self) -> str:
        if self.parent_id is None:
            self.parent_id = find_sweep_run(self.client, self._experiment(), self.sweep.sweep_path)
        return self.parent_id

    def _child(self, trial_id: str) -> str | None:
        if trial_id not in self._children:
            found = self.client.search_runs([self._experiment()], f"tags.`{R.TRIAL_ID}` = '{trial_id}' and "
                                            f"tags.`{R.PARENT_RUN_ID}` = '{self._parent()}'", max_results=1)
            if not found:
                return None
            self._children[trial_id] = found[0].info.run_id
            history = self.client.get_metric_history(found[0].info.run_id, "train_loss")
            self._logged_step[trial_id] = max((m.step for m in history), default=-1)
        return self._children[trial_id]

    # --- the journal's operations ------------------------------------------------------------------------
    def _sweep(self, op: dict) -> None:
        """The parent run: found again (a resumed sweep: RUNNING again) or created."""
        if self._parent() is not None:
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            path = self.sweep.sweep_path
            self.parent_id = self.client.create_run(self._experiment(), run_name=op["run_name"], tags={
                R.SWEEP_PATH: path, R.ROLE: R.ROLE_SWEEP, R.SWEEP_KEY: sweep_key(path),
                R.SEARCHED: ",".join(op["searched"])}).info.run_id
            self._log_metrics(self.parent_id, op["corpus_metrics"], step=0)
        self._log_params_once(self.parent_id, op["params"])

    def _trial(self, op: dict) -> None:
        """A trial's child run: found again (continue after its last step) or created."""
        trial_id = op["trial_id"]
        run_id = self._child(trial_id)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, R.OUTCOME, R.RUNNING)
        else:
            if self._names is None:
                self._names = mlflow_view.trial_names(self.client, self._experiment(), self._parent())
            name = mlflow_view.unique_name(op["run_name"], self._names)
            run_id = self.client.create_run(self._experiment(), run_name=name, tags={
                R.PARENT_RUN_ID: self._parent(), R.TRIAL_ID: trial_id, R.ROLE: R.ROLE_TRIAL,
                R.OUTCOME: R.RUNNING}).info.run_id
            self._names.add(name)
            self._children[trial_id] = run_id
            self._log_metrics(run_id, op["corpus_metrics"], step=0)
        self._log_params_once(run_id, op["params"])

    def _result(self, op: dict) -> None:
        trial_id, step, start = op["trial_id"], int(op["step"]), int(op.get("start_step") or 0)
        run_id = self._child(trial_id)
        # Each piece is remembered only once MLflow has it: an op that fails halfway is applied again from there.
        if start and self._start_step.get(trial_id) != start:  # began from a checkpoint: restart or resume
            self.client.set_tag(run_id, R.RESUMED_FROM_STEP, str(start))
            self._start_step[trial_id] = start
        if step <= self._logged_step.get(trial_id, -1):
            return  # replayed from an older checkpoint than the last logged step: logged already
        if op.get("samples"):  # first: writing it twice only overwrites the file
            self.client.log_text(run_id, "\n\n---\n\n".join(op["samples"]), f"samples/step_{step:06d}.txt")
        self._log_metrics(run_id, op["metrics"], step)
        self._logged_step[trial_id] = step

    def _recover(self, op: dict) -> None:
        """Tune restarted a crashed trial (FailureConfig.max_failures): count it; the run itself continues."""
        run_id = self._child(op["trial_id"])
        restarts = int(self.client.get_run(run_id).data.tags.get(R.RESTARTS, "0")) + 1
        self.client.set_tag(run_id, R.RESTARTS, str(restarts))

    def _finish(self, op: dict) -> None:
        run_id = self._child(op["trial_id"])
        self.client.set_tag(run_id, R.OUTCOME, op["outcome"])
        if op.get("node_id"):
            self.client.set_tag(run_id, R.NODE_ID, op["node_id"])
        if op.get("config") is not None:
            self.client.log_dict(run_id, op["config"], "config.json")
            self._log_learning_curve(run_id, op["title"])
        if op.get("model_dir"):
            log_model_folder(self.client, run_id, op["model_dir"])
        self.client.set_terminated(run_id, STATUS[op["outcome"]])

    def _parent_metrics(self, op: dict) -> None:
        """Metrics of the sweep as a whole (the scratch baseline), at step 0 of the parent run."""
        self._log_metrics(self._parent(), op["metrics"], step=0)

    def _end(self, op: dict) -> None:
        """The best trial so far on the parent (tags: params are write-once and a resume may find a new best). A part
        that grows a sweep sees only its own trials: an earlier part's better best stays."""
        recorded = self.client.get_run(self._parent()).data.metrics.get("best_val_ppl")
        best = op.get("best")
        if best and (recorded is None or best["metrics"]["best_val_ppl"] < recorded):
            for key, value in best["tags"].items():
                self.client.set_tag(self._parent(), key, value)
            self._log_metrics(self._parent(), best["metrics"], step=0)
            best_trial = best["tags"].get(R.BEST_TRIAL_ID)
            tag_best_model(self.client, self._parent(), best_trial and self._child(best_trial))
        mlflow_view.describe_sweep(self.client, self._parent())  # name, note and trial counts from MLflow
        self.client.set_terminated(self._parent(), op["status"])

    # --- writing -----------------------------------------------------------------------------------------
    def _log_params_once(self, run_id: str, values: dict) -> None:
        """Log the params the run lacks. MLflow raises on a param re-logged with another value, and a resumed
        run may see one rendered differently (or a run created just before a crash may have none yet)."""
        have = self.client.get_run(run_id).data.params
        missing = [Param(k, str(v)) for k, v in sorted(values.items()) if k not in have]
        if missing:
            self.client.log_batch(run_id, params=missing)

    def _log_metrics(self, run_id: str, values: dict, step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()
                   if isinstance(v, numbers.Real) and not isinstance(v, bool)]  # numpy scalars count too
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def _log_learning_curve(self, run_id: str, title: str) -> None:
        fig = Figure(figsize=(6, 4))  # no pyplot: no global backend or figure registry in the sweep's driver
        ax = fig.subplots()
        for key in ("train_loss", "val_loss"):
            history = sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))
            if history:
                ax.plot(*zip(*history), marker="o", markersize=3, label=key)
        ax.set(xlabel="training step", ylabel="loss (nats/token)", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
        self.client.log_figure(run_id, fig, "learning_curve.png")
