"""Checks of a sweep's flags that need the file system or the network: done while planning, before Ray starts or
anything is written, so that a wrong --storage, --mlflow-uri, --experiment, --seed, --address or a --resume with
other data fails in one line (exit 2) instead of a traceback after a minute of Ray and MLflow.

    python sweeps/lr_warmup.py --mlflow-uri garbage          (error: --mlflow-uri 'garbage' is not ...)

An http(s) tracking server that is down is not refused: the sweep's journal keeps MLflow's writes until it is back.
"""
from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

from sweeps.engine.grow import origin_of
from sweeps.engine.tracking.journal import Journal, journal_folder
from trainer.cli import check_writable_folder
from trainer.config import ConfigError, RunConfig, flatten
from trainer.result_schema import sqlite_path

MAX_SEED = 2**32 - 1  # numpy's and Optuna's seeds
URI_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")  # MLflow's stores
URI_EXAMPLE = "use sqlite:////abs/path/mlflow.db (a file) or http://HOST:PORT (a tracking server)"
ADDRESS_TIMEOUT_S = 5.0
DATA_FLAGS = {"data.source": "--data", "data.val_source": "--val-data", "data.tokenizer": "--tokenizer"}


def check_experiment(name: str) -> None:
    """It names a folder inside --storage and an MLflow experiment: a plain name, never a path."""
    if not name.strip() or name != name.strip() or name.startswith(".") or re.search(r"[/\\\x00-\x1f]", name):
        raise ConfigError(f"--experiment {name!r} must be a plain name (no path separators, not empty, not "
                          "starting with '.'): it names a folder inside --storage; e.g. --experiment lr_warmup")


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed {seed} must be between 0 and {MAX_SEED}; e.g. --seed 0")


def check_tracking_uri(uri: str) -> None:
    """A store MLflow knows; for SQLite, an existing folder and a database (if there is one) this user can write."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else None
    if scheme == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() == "true":
        return
    if scheme not in URI_SCHEMES:
        raise ConfigError(f"--mlflow-uri {uri!r} is not an MLflow tracking URI; {URI_EXAMPLE}")
    if scheme != "sqlite":
        return
    database = sqlite_path(uri)
    if database is None or not str(database):
        raise ConfigError(f"--mlflow-uri {uri!r}: a SQLite URI names a file, sqlite:////abs/path/mlflow.db")
    if not database.parent.is_dir():
        raise ConfigError(f"--mlflow-uri {uri!r}: the folder {database.parent} does not exist; create it, or "
                          "point --mlflow-uri at an existing folder")
    check_writable_folder(database.parent, "--mlflow-uri")  # SQLite writes a journal file beside the database
    if database.exists():
        try:
            with open(database, "r+b"):
                pass
        except OSError as error:
            raise ConfigError(f"--mlflow-uri {uri!r}: cannot write {database} ({error.strerror or error}); "
                              "make it writable or use another database file") from None


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address such as HOST:6379 or ray://HOST:10001; None for 'auto' and 'local'."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", address)
    return (match[1], int(match[2])) if match else None


def check_address(address: str | None) -> None:
    """A cluster address answers on its port, or the sweep stops here rather than in Ray's minute of retries."""
    if address is None or address in ("auto", "local"):
        return
    host_port = _host_port(address)
    if host_port is None:
        raise ConfigError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto; e.g. "
                          "--address 10.0.0.5:6379 (the address `ray start --head` printed)")
    try:
        socket.create_connection(host_port, timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise ConfigError(f"--address {address}: the Ray cluster does not answer ({reason}); check the head "
                          "node's address and port, or leave --address out for a local cluster") from None


def check_resume_data(resume_path: Path, cfg: RunConfig) -> None:
    """A resumed sweep's trials keep their data flags: the driver's tokens must be made the same way. The flags
    the sweep started with are the params of its first journal line (sweeps.engine.tracking.journal)."""
    journal = Journal(journal_folder(str(origin_of(resume_path))))
    try:
        first = journal.path.read_text(encoding="utf-8").split("\n", 1)[0]
        before = json.loads(first)["params"] if first.strip() else {}
    except (OSError, ValueError, KeyError):
        return  # the sweep never got as far as tracking: nothing depends on its data yet
    now = {k: str(v) for k, v in flatten(cfg).items() if v is not None}  # as the sweep logged its params
    for key, flag in DATA_FLAGS.items():
        if before.get(key) != now.get(key):
            raise ConfigError(f"--resume: {resume_path.name} was started with {flag} {before.get(key, '(none)')}, "
                              f"not {now.get(key, '(none)')}; resume with the same data flags (or drop --resume "
                              "to start a new sweep)")


def check_sweep_inputs(experiment: str, seed: int, storage: str, tracking_uri: str, address: str | None) -> None:
    check_experiment(experiment)
    check_seed(seed)
    if "://" not in storage:
        check_writable_folder(Path(storage), "--storage")
    check_tracking_uri(tracking_uri)
    check_address(address)
