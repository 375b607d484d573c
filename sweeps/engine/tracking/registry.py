"""The sweep's best model in its summary, and in MLflow's model registry with `--register NAME`.

    python sweeps/lr_warmup.py --register lr_warmup_best
    python -m trainer.generate models:/lr_warmup_best/1 --prompt "The"      (the registered version, later)

`--register NAME` adds the best trial's model folder to MLflow's model registry as a new version of NAME: a model
version whose source is the run's `model/` artifacts (MLflow's `register_model` wants an MLmodel file or a logged
model, which a folder of plain files is not). The registry is the tracking store's: the SQLite database or the
tracking server.
"""
from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from sweeps.engine.tracking.journal import is_unreachable
from sweeps.engine.tracking.writer import find_sweep_run
from trainer import result_schema as R
from trainer.model_folder import MODEL_DIR


def register_model(client: MlflowClient, uri: str, name: str) -> str:
    """A version of registered model `name` holding the run's model folder; the existing version when the latest
    one already holds it (a resumed sweep whose best did not change). Returns the version."""
    run_id = uri.removeprefix("runs:/").split("/")[0]
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_DIR}"
    try:
        client.create_registered_model(name, description="Models of gptsweep sweeps: a folder of "
                                       "model.safetensors, config.json and tokenizer.json (python -m trainer.generate)")
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        versions = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"], max_results=1)
        if versions and versions[0].run_id == run_id and versions[0].source == source:
            return str(versions[0].version)
    return str(client.create_model_version(name, source, run_id=run_id).version)


def best_model_lines(sweep: R.SweepIdentity, register: str | None) -> list[str]:
    """What the sweep's summary says of its best model: its URI, how to sample it and, with --register, the
    registered version (or why there is none)."""
    tracking_uri, experiment, sweep_path = sweep.tracking_uri, sweep.experiment, sweep.sweep_path
    database = R.sqlite_path(tracking_uri)
    if database is not None and not database.is_file():
        return []  # nothing was written there (and a client would create an empty database)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        parent_id = found and find_sweep_run(client, found.experiment_id, sweep_path)
        tags = client.get_run(parent_id).data.tags if parent_id else {}
    except Exception as error:  # a tracking server that is down: the summary says where the journal waits
        if not is_unreachable(error):
            raise
        return []
    uri = tags.get(R.BEST_MODEL_URI)
    if uri is None:
        return ["best model: not saved (train.save_model=false)"] if R.BEST_TRIAL_ID in tags else []
    lines = [f"best model: {uri}\n  sample it: python -m trainer.generate {uri} --mlflow-uri {tracking_uri} "
             "--prompt 'The'"]
    if register:
        try:
            lines.append(f"  registered: models:/{register}/{register_model(client, uri, register)}")
        except MlflowException as error:
            lines.append(f"  not registered as {register}: {' '.join(str(error).split())[:300]}")
    return lines
