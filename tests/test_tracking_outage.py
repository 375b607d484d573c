"""pytest tests/test_tracking_outage.py — a tracking server that goes down loses nothing: a real `mlflow server` on
127.0.0.1 is killed while a real 4-trial sweep runs, and MLflow ends up holding exactly what it would have held.

    pytest tests/test_tracking_outage.py -k restart      # down for ~20 s, back before the sweep ends
    pytest tests/test_tracking_outage.py -k replay       # down until the sweep ends; then python -m sweeps.engine.sync
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import SWEEP

pytestmark = pytest.mark.slow
STEPS, EVERY, TRIALS = 48, 8, 4


class MlflowServer:
    """`mlflow server` on a free loopback port over one SQLite store; stop() kills it, start() brings it back."""

    def __init__(self, folder: Path):
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri, self.process = f"http://127.0.0.1:{self.port}", None

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=self.folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


def _start_sweep(tmp_path: Path, corpus: Path, uri: str, wait_s: str) -> subprocess.Popen:
    flags = ["--preset", "smoke", "--data", str(corpus), "--tokenizer", "bpe:300", "--finetune-train", "none",
             "--search", "random", "--scheduler", "fifo", "--num-samples", str(TRIALS), "--max-concurrent", "2",
             "--mlflow-uri", uri, "--experiment", "outage",
             "--set", f"train.max_steps={STEPS}", "--set", f"train.eval_every={EVERY}"]
    env = {**os.environ, "GPTSWEEP_TRACKING_WAIT_S": wait_s}
    return subprocess.Popen(SWEEP + flags, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for_first_results(uri: str, seconds: float = 300) -> None:
    client, deadline = MlflowClient(uri), time.monotonic() + seconds
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name("outage")
        runs = client.search_runs([experiment.experiment_id], "tags.`gptsweep.role` = 'trial'") if experiment else []
        if any("val_ppl" in r.data.metrics for r in runs):
            return
        time.sleep(0.5)
    raise AssertionError("no trial reported in time")


def _assert_complete(uri: str) -> None:
    """1 parent FINISHED, TRIALS children FINISHED and completed, each val_ppl at every eval step exactly once."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("gptsweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("gptsweep.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and "best_val_ppl" in parents[0].data.metrics
    assert len(children) == TRIALS
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED" and child.data.tags["gptsweep.outcome"] == "completed"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_ppl")]
        assert steps == list(range(EVERY, STEPS + 1, EVERY))  # no step missing, none twice


def test_a_server_restart_mid_sweep_loses_nothing(server, tiny_corpus, tmp_path):
    sweep = _start_sweep(tmp_path, tiny_corpus, server.uri, wait_s="120")
    _wait_for_first_results(server.uri)
    server.stop()
    time.sleep(20)
    server.start()
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, output[-3000:]
    _assert_complete(server.uri)


def test_a_server_down_until_the_end_is_replayed_by_sweeps_sync(server, tiny_corpus, tmp_path):
    sweep = _start_sweep(tmp_path, tiny_corpus, server.uri, wait_s="5")
    _wait_for_first_results(server.uri)
    server.stop()
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, output[-3000:]
    command = re.search(r"python -m sweeps\.engine\.sync --sweep (\S+)", output)
    assert command, output[-3000:]
    server.start()
    sync = subprocess.run([sys.executable, "-m", "sweeps.engine.sync", "--sweep", command.group(1)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert sync.returncode == 0, sync.stderr
    _assert_complete(server.uri)
    again = subprocess.run([sys.executable, "-m", "sweeps.engine.sync", "--sweep", command.group(1)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "sent 0 updates" in again.stdout  # each line is applied once
    _assert_complete(server.uri)
