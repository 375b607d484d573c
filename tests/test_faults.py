"""pytest tests/test_faults.py -m slow — faults a cluster job meets, on real processes: a SIGTERM to the sweep's
whole process group (timeout, Slurm, Kubernetes), and a second sweep started in a folder where one runs.

    pytest tests/test_faults.py -k group_sigterm
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
SWEEP = [sys.executable, str(REPO / "sweeps" / "lr_warmup.py")]
WAIT_S = 240  # bounds on waiting for a sweep, not measurements: a busy 2-core machine is slow


def sweep_flags(corpus: Path, *extra: str) -> list[str]:
    """Two sequential smoke trials long enough to be interrupted; results and MLflow in the cwd's defaults."""
    return ["--preset", "smoke", "--data", str(corpus), "--tokenizer", "bpe:300", "--finetune-train", "none",
            "--search", "random", "--scheduler", "fifo", "--num-samples", "2", "--max-concurrent", "1",
            "--set", "train.max_steps=600", "--set", "train.eval_every=50", *extra]


def start_in_own_session(folder: Path, flags: list[str], name: str = "sweep") -> subprocess.Popen:
    """The sweep as a batch system starts it: in a session (and process group) of its own."""
    return subprocess.Popen(SWEEP + flags, cwd=folder, start_new_session=True,
                            stdout=open(folder / f"{name}.out", "w"), stderr=open(folder / f"{name}.err", "w"))


def wait_for_checkpoint(folder: Path, sweep: subprocess.Popen) -> None:
    """Until a trial has reported an eval with its checkpoint (the driver has created the MLflow runs by then)."""
    deadline = time.monotonic() + WAIT_S
    while not list((folder / "ray_results").glob("lr_warmup_*/*/checkpoint_*")):
        assert sweep.poll() is None, (folder / "sweep.err").read_text()
        assert time.monotonic() < deadline, "no trial reported"
        time.sleep(0.2)


def runs(folder: Path) -> tuple[list, list]:
    """(parent runs, child runs in start order) of the lr_warmup experiment in folder/mlflow.db."""
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("lr_warmup").experiment_id
    found = client.search_runs([experiment_id], max_results=100, order_by=["start_time"])
    return ([r for r in found if r.data.tags.get("gptsweep.role") == "sweep"],
            [r for r in found if r.data.tags.get("gptsweep.role") == "trial"])


@pytest.mark.slow
def test_a_group_sigterm_stops_the_sweep_like_ctrl_c_and_resume_finishes_it(tiny_corpus, tmp_path):
    sweep = start_in_own_session(tmp_path, sweep_flags(tiny_corpus))
    wait_for_checkpoint(tmp_path, sweep)
    os.killpg(sweep.pid, signal.SIGTERM)  # what `timeout`, Slurm and `kill -TERM -- -PGID` do
    sweep.wait(timeout=WAIT_S)
    err = (tmp_path / "sweep.err").read_text()
    assert sweep.returncode == 128 + signal.SIGTERM, err
    command = err.split("continue from their last checkpoints with:\n", 1)[1].splitlines()[0].strip()
    assert command.endswith(" --resume")
    (parent,), children = runs(tmp_path)
    assert parent.info.status == "KILLED"
    assert [(c.info.status, c.data.tags["gptsweep.outcome"]) for c in children] == [("KILLED", "interrupted")]

    resumed = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=WAIT_S)
    assert resumed.returncode == 0, resumed.stderr
    (parent,), after = runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert after[0].info.run_id == children[0].info.run_id  # continued, not started again
    assert [(c.info.status, c.data.tags["gptsweep.outcome"]) for c in after] == [("FINISHED", "completed")] * 2
