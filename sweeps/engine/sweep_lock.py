"""One sweep of an experiment at a time in a --storage folder, and one process at a time creating a fresh SQLite
schema.

    python sweeps/lr_warmup.py & python sweeps/lr_warmup.py     (the second: "error: another sweep ... is running")

Two sweeps of one experiment started in one folder at once shared everything that is named after the experiment
and the start second: the Tune folder, the MLflow parent run, the Optuna study; one died on a database conflict.
`sweep_lock` holds an flock on `<storage>/.<experiment>.lock` for the sweep's whole life (the kernel releases it
when the process ends, even by SIGKILL), and a second sweep is refused in one line. Sweeps of other experiments
run beside it; `schema_lock` keeps two of them from creating one fresh database's tables at the same moment
(MLflow's and Optuna's migrations race).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import Iterator

from trainer.config import ConfigError
from trainer.data import cache_dir
from trainer.result_schema import sqlite_path


def lock_folder(storage: str) -> Path:
    """The storage folder itself; for remote storage (s3://...), a local folder named after it."""
    if "://" not in storage:
        return Path(storage)
    return cache_dir() / "locks" / hashlib.sha256(storage.encode()).hexdigest()[:16]


@contextlib.contextmanager
def sweep_lock(storage: str, experiment: str) -> Iterator[None]:
    """Held while the block runs; raises ConfigError at once when another process holds it."""
    folder = lock_folder(storage)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{experiment}.lock", "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ConfigError(f"another sweep of experiment '{experiment}' is running in {folder} ({holder}); "
                              "wait for it to end, or give this one another --experiment or --storage") from None
        f.truncate(0)
        f.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        yield


@contextlib.contextmanager
def schema_lock(tracking_uri: str) -> Iterator[None]:
    """While the block runs, no other sweep creates tables in the SQLite databases of this folder (MLflow's, and
    Optuna's beside it); waits for one that does. No-op for a tracking server."""
    database = sqlite_path(tracking_uri)
    if database is None:
        yield
        return
    with open(database.parent / ".gptsweep-schema.lock", "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
