"""Each completed trial's model folder as MLflow artifacts, and the best one's URI on the sweep's parent run.

    python sweeps/lr_warmup.py        (the tracking callback and writer call these at each trial's end and the sweep's)

A completed trial leaves its model folder (trainer/model_folder.py) in its last Tune checkpoint; the driver logs
it to the trial's run as artifacts under `model/` (the journal's `finish` line names the folder), and tags the
sweep's parent run with the best trial's `runs:/RUN_ID/model` (result_schema.BEST_MODEL_URI).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.fs
from mlflow.tracking import MlflowClient

from trainer import result_schema as R
from trainer.model_folder import MODEL_DIR


def trial_model_dir(trial, outcome: str, local_root: Path) -> str | None:
    """The local folder of a completed trial's model (from its last checkpoint; a copy under local_root when the
    sweep's storage is remote), or None: not completed, or no model saved (train.save_model=false)."""
    checkpoint = trial.checkpoint if outcome == R.COMPLETED else None
    if checkpoint is None:
        return None
    source = f"{checkpoint.path}/{MODEL_DIR}"
    if checkpoint.filesystem.get_file_info(source).type != pyarrow.fs.FileType.Directory:
        return None
    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return source
    target = local_root / "models" / trial.trial_id
    pyarrow.fs.copy_files(source, str(target), source_filesystem=checkpoint.filesystem)
    return str(target)


def log_model_folder(client: MlflowClient, run_id: str, folder: str) -> None:
    """The folder's files as the run's artifacts under model/ (a replay after the folder was deleted skips it)."""
    if Path(folder).is_dir():
        client.log_artifacts(run_id, folder, MODEL_DIR)


def model_uri(run_id: str) -> str:
    return f"runs:/{run_id}/{MODEL_DIR}"


def tag_best_model(client: MlflowClient, parent_id: str, best_run_id: str | None) -> None:
    """Tag the parent with the best trial's model URI, or drop the tag when that trial saved no model."""
    has_model = best_run_id is not None and bool(client.list_artifacts(best_run_id, MODEL_DIR))
    if has_model:
        client.set_tag(parent_id, R.BEST_MODEL_URI, model_uri(best_run_id))
    elif R.BEST_MODEL_URI in client.get_run(parent_id).data.tags:
        client.delete_tag(parent_id, R.BEST_MODEL_URI)
