"""Lines of the sweep's console summary that depend on what went wrong or where MLflow lives.

    python sweeps/lr_warmup.py      (the lines after "sweep finished")
"""
from __future__ import annotations

import re

ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")


def error_line(error: BaseException) -> str:
    """`Type: first line` of the exception a trial raised. Ray wraps it in a RayTaskError whose text begins with
    the actor's coloured name ("ray::ImplicitFunc.train() (pid=...)"); its `cause` is the trial's own exception."""
    while getattr(error, "cause", None) is not None and error.cause is not error:
        error = error.cause
    lines = [line.strip() for line in ANSI_CODE.sub("", str(error)).splitlines() if line.strip()]
    if type(error).__name__.startswith("RayTaskError") and lines:
        return lines[-1]  # no cause came back: the traceback's last line names the exception
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def browse_hint(tracking_uri: str) -> str:
    """How to look at the sweep in MLflow's UI: a tracking server serves it; a database needs `mlflow ui`."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"browse: open {tracking_uri.rstrip('/')} in a browser"
    return ("browse: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui "
            f"--backend-store-uri {tracking_uri} --host 127.0.0.1 --workers 1")
