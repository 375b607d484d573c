"""Helpers of the sweep tests that drive a sweep's processes: find and kill a trial's worker, start a sweep as a
subprocess, wait for its reports, interrupt it (tests/sweeps/test_reliability.py, tests/sweeps/test_gpu_sweeps.py).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.support import SWEEP


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Ray's raylet is a child of the driver, its workers children of the raylet)."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, pp in parent_of.items() if pp in frontier]
        found += children
        frontier = children
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_a_trial_worker(expected: int, seen: list[str], killed: list[int]) -> None:
    """SIGKILL one of this test's Ray trial workers when exactly `expected` of them are running; the process
    titles seen go into `seen` (for the failure message), the pid killed into `killed`."""
    # "ray::ImplicitFunc.train" while the driver waits on a train() call, "ray::ImplicitFunc" between calls
    seen.extend(cmdline(p) for p in descendants(os.getpid()))
    workers = [p for p in descendants(os.getpid()) if cmdline(p).startswith("ray::ImplicitFunc")]
    if len(workers) == expected:
        os.kill(workers[0], signal.SIGKILL)
        killed.append(workers[0])


def checkpoints(storage: Path, experiment: str) -> list[Path]:
    return list(storage.glob(f"{experiment}_*/*/checkpoint_*"))


def wait_for_reports(storage: Path, db: Path, experiment: str, done, seconds: float = 180) -> None:
    """Until `done(last val_loss step of each trial, in start order)`: the driver has then registered those
    reports' checkpoints. MLflow is read only once a checkpoint exists, when the driver has long created the
    database (two processes creating one schema race)."""
    deadline = time.monotonic() + seconds
    while not checkpoints(storage, experiment):
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.1)
    client = MlflowClient(f"sqlite:///{db}")
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    while True:
        trials = client.search_runs([experiment_id], "tags.`gptsweep.role` = 'trial'", order_by=["start_time"])
        if done([max((m.step for m in client.get_metric_history(t.info.run_id, "val_loss")), default=0)
                 for t in trials]):
            return
        assert time.monotonic() < deadline, "the trials did not report in time"
        time.sleep(0.1)


def start_sweep(tmp_path: Path, corpus: Path, *extra: str) -> subprocess.Popen:
    """Two sequential 600-step trials (unless `extra` flags say otherwise), Tune's results and MLflow in the default
    places under tmp_path."""
    flags = ["--preset", "smoke", "--data", str(corpus), "--tokenizer", "bpe:300", "--finetune-train", "none",
             "--search", "random", "--scheduler", "fifo", "--num-samples", "2", "--max-concurrent", "1",
             "--set", "train.max_steps=600", "--set", "train.eval_every=50", *extra]
    return subprocess.Popen(SWEEP + flags, cwd=tmp_path, stdout=open(tmp_path / "out.txt", "w"),
                            stderr=open(tmp_path / "err.txt", "w"))


def interrupt_during_the_second_trial(tmp_path: Path, sweep: subprocess.Popen, signum: int) -> None:
    def second_trial_reported(steps: list[int]) -> bool:
        assert sweep.poll() is None, (tmp_path / "err.txt").read_text()
        return len(steps) == 2 and steps[1] >= 50

    wait_for_reports(tmp_path / "ray_results", tmp_path / "mlflow.db", "lr_warmup", second_trial_reported)
    sweep.send_signal(signum)
    sweep.wait(timeout=60)
