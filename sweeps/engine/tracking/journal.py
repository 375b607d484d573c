"""What a sweep sends to MLflow, kept as an append-only journal in its Tune folder and applied in order: when the
tracking server is down, the trials keep training and nothing is lost.

    python -m sweeps.engine.sync --sweep ray_results/lr_warmup_20261202-064000      (applies what the server missed)

Every write of the tracking callback (sweeps.engine.tracking.tune_events) is one JSON line in `mlflow_journal.jsonl`; the count of
lines already applied is kept in `mlflow_journal.done` (written after each one, by rename). `Outbox` applies the
pending lines through `sweeps.engine.tracking.writer.MlflowWriter` whenever the callback hears from Tune; an unreachable
server makes it wait (2 s, 4 s, ... 30 s between tries) instead of holding up Tune. What a sweep could not apply
by its end is applied by `python -m sweeps.engine.sync`, by a `--resume` of the sweep, or both: a line is applied once.
"""
from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections import deque
from pathlib import Path

import requests

from trainer.data import cache_dir

JOURNAL, DONE = "mlflow_journal.jsonl", "mlflow_journal.done"
FIRST_WAIT_S, MAX_WAIT_S = 2.0, 30.0
# The MLflow client's own HTTP retries (7, with backoff) would hold Tune's loop for minutes per call while the
# server is down; the outbox retries instead, so one try each, and a short timeout for a hung server.
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def use_client_env() -> None:
    """Set CLIENT_ENV (unless the user set it) before the first MLflow client call of a process that writes."""
    for key, value in CLIENT_ENV.items():
        os.environ.setdefault(key, value)


def journal_folder(sweep_path: str) -> Path:
    """The sweep's Tune folder when it is local; for remote storage, a local folder named after the sweep."""
    if "://" not in sweep_path:
        return Path(sweep_path)
    return cache_dir() / "journals" / sweep_path.replace("://", "_").replace("/", "_")


class Journal:
    def __init__(self, folder: Path):
        self.path, self.done_path = folder / JOURNAL, folder / DONE

    def append(self, op: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(op, default=str) + "\n")

    def done(self) -> int:
        return int(self.done_path.read_text()) if self.done_path.is_file() else 0

    def mark_done(self, count: int) -> None:
        partial = self.done_path.with_suffix(".partial")
        partial.write_text(str(count))
        os.replace(partial, self.done_path)

    def pending(self) -> list[dict]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines[self.done():] if line.strip()]


def is_unreachable(error: Exception) -> bool:
    """A server that is down, restarting or hung, as MLflow's REST client reports it (not a bad request)."""
    # MLflow is imported here, not at the top: the planner reads the journal while checking input, and a sweep
    # with bad input must not wait seconds for MLflow before its one-line error.
    from mlflow.exceptions import MlflowException

    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
        return True
    text = str(error)
    return isinstance(error, MlflowException) and any(
        s in text for s in ("Max retries exceeded", "Connection refused", "Failed to establish", "timed out",
                            "503", "502", "504", "Remote end closed"))


def is_disk_full(error: Exception) -> bool:
    """The tracking store's disk is full (SQLite says so in words; artifacts fail with ENOSPC): the line waits
    in the journal like it does for a server that is down, and goes in once there is room."""
    return getattr(error, "errno", None) == errno.ENOSPC or "disk is full" in str(error) or \
        "No space left on device" in str(error)


class Outbox:
    """The journal's pending lines, applied in order by `writer`; never blocks on a server that is down."""

    def __init__(self, journal: Journal, writer, tracking_uri: str):
        self.journal, self.writer, self.tracking_uri = journal, writer, tracking_uri
        self.queue: deque[dict] = deque(journal.pending())  # what an earlier driver could not apply
        self.applied = journal.done()
        self.next_try, self.wait_s, self.warned = 0.0, FIRST_WAIT_S, False

    def send(self, op: dict) -> None:
        self.journal.append(op)
        self.queue.append(op)
        self.flush()

    def flush(self) -> bool:
        """Apply what is pending unless the server was unreachable a moment ago; True when nothing is left."""
        while self.queue and time.monotonic() >= self.next_try:
            try:
                self.writer.apply(self.queue[0])
            except Exception as error:
                if not (is_unreachable(error) or is_disk_full(error)):
                    raise
                self._unreachable(error)
                return False
            self.queue.popleft()
            self.applied += 1
            self.journal.mark_done(self.applied)
            self.wait_s = FIRST_WAIT_S
        return not self.queue

    def drain(self, budget_s: float) -> bool:
        """At the sweep's end: keep trying for up to budget_s; True when everything reached MLflow."""
        deadline = time.monotonic() + budget_s
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(max(0.2, min(self.next_try, deadline) - time.monotonic()))
        return not self.queue

    def _unreachable(self, error: Exception) -> None:
        self.next_try = time.monotonic() + self.wait_s
        self.wait_s = min(self.wait_s * 2, MAX_WAIT_S)
        if not self.warned:
            self.warned = True
            problem = "has no disk space left" if is_disk_full(error) else "is unreachable"
            print(f"MLflow at {self.tracking_uri} {problem} ({type(error).__name__}); the trials go on and "
                  f"their results wait in {self.journal.path}", file=sys.stderr, flush=True)
