"""No usage telemetry leaves the machine unless the user opts in: MLflow, the Hugging Face hub and Ray each
report usage by default; every entry point switches them off before importing them.

    python sweeps/lr_warmup.py     python -m trainer ...     python -m analysis.report ...   (all call it first)

A user who wants to share usage data sets the variable themselves (e.g. MLFLOW_DISABLE_TELEMETRY=false):
a value already in the environment is kept.
"""
from __future__ import annotations

import os

TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow 3's usage telemetry
    "DO_NOT_TRACK": "1",  # the cross-tool convention MLflow and others also read
    "HF_HUB_DISABLE_TELEMETRY": "1",  # huggingface_hub's usage pings
    "RAY_USAGE_STATS_ENABLED": "0",  # Ray's usage stats (workers inherit it from the driver's raylet)
}


def disable_telemetry() -> dict[str, str]:
    """Set each switch unless the user set it; return the values in force (for a trial's worker: the same)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in TELEMETRY_OFF}
