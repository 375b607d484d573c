"""MODEL on a command line: a model folder, or the MLflow URI of one (`runs:/RUN_ID/model`, `models:/NAME/VERSION`).

    python -m trainer.generate runs:/RUN_ID/model --mlflow-uri sqlite:////abs/path/mlflow.db --prompt "The"

An MLflow URI is resolved against --mlflow-uri, else MLFLOW_TRACKING_URI, else the sweeps' default
sqlite:///<cwd>/mlflow.db (its model registry is the same store), and downloaded into a temporary folder.
MLflow is imported only for such a URI: it takes ~3 s, which a local folder (or a typo in one) does not wait for.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from trainer.cli import default_tracking_uri
from trainer.config import ConfigError
from trainer.result_schema import sqlite_path

MLFLOW_SCHEMES = ("runs:/", "models:/")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model folder (OUT/model of python -m trainer --out OUT), "
                        "runs:/RUN_ID/model or models:/NAME/VERSION")
    parser.add_argument("--mlflow-uri", default=None, help="the MLflow store of a runs:/ or models:/ MODEL "
                        "(default: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")


@contextlib.contextmanager
def model_folder(spec: str, tracking_uri: str | None) -> Iterator[Path]:
    """The local folder MODEL names, for the duration of the `with` block."""
    if not spec.startswith(MLFLOW_SCHEMES):
        yield Path(spec).expanduser()
        return
    with tempfile.TemporaryDirectory(prefix="gptsweep-model-") as folder:
        yield download(spec, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(),
                       Path(folder))


def download(spec: str, tracking_uri: str, into: Path) -> Path:
    """Download the artifacts an MLflow URI names into `into`; a ConfigError (one line) when that fails."""
    database = sqlite_path(tracking_uri)
    if database is not None and not database.is_file():  # a client would create an empty database there
        raise ConfigError(f"no MLflow database at {database} for {spec}; pass the sweep's store with --mlflow-uri "
                          "(or set MLFLOW_TRACKING_URI)")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a wrong address fails now, not in minutes
    import mlflow  # noqa: PLC0415  (see the module docstring)
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # models:/ URIs are looked up in the global registry, not an argument
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=spec, dst_path=str(into)))
    except (MlflowException, OSError) as error:
        reason = " ".join(str(error).split())[:300]
        raise ConfigError(f"cannot fetch {spec} from {tracking_uri}: {reason}; a trial has a model only when it "
                          "completed (the sweep's summary names the best one's URI), and --mlflow-uri must name "
                          "the sweep's MLflow store") from None
