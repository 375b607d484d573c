"""pytest tests/sweeps/test_faults.py -m slow — faults a cluster job meets, on real processes: a SIGTERM to the sweep's
whole process group (timeout, Slurm, Kubernetes), sweeps started at once in one folder, a tracking server that is
down when the sweep starts.

    pytest tests/sweeps/test_faults.py -k group_sigterm
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
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
    # what `timeout` does (the process, then its whole group); Slurm and `kill -TERM -- -PGID` send the second
    os.kill(sweep.pid, signal.SIGTERM)
    os.killpg(sweep.pid, signal.SIGTERM)
    sweep.wait(timeout=WAIT_S)
    err = (tmp_path / "sweep.err").read_text()
    assert sweep.returncode == 128 + signal.SIGTERM, err
    command = err.split("continue from their last checkpoints with:\n", 1)[1].splitlines()[0].strip()
    assert command.endswith(" --resume")
    (parent,), children = runs(tmp_path)
    assert parent.info.status == "KILLED"
    assert [(c.info.status, c.data.tags["gptsweep.outcome"]) for c in children] == [("KILLED", "interrupted")]

    other_data = subprocess.run(["bash", "-c", command.replace("bpe:300", "bpe:400")], capture_output=True,
                                text=True, timeout=WAIT_S)
    assert other_data.returncode == 2 and "--tokenizer bpe:300, not bpe:400" in other_data.stderr
    assert len(other_data.stderr.strip().splitlines()) == 1, other_data.stderr

    resumed = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=WAIT_S)
    assert resumed.returncode == 0, resumed.stderr
    (parent,), after = runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert after[0].info.run_id == children[0].info.run_id  # continued, not started again
    assert [(c.info.status, c.data.tags["gptsweep.outcome"]) for c in after] == [("FINISHED", "completed")] * 2


def short_sweep(corpus: Path, *extra: str) -> list[str]:
    return ["--preset", "smoke", "--data", str(corpus), "--tokenizer", "bpe:300", "--finetune-train", "none",
            "--num-samples", "1", "--set", "train.max_steps=30", "--set", "train.eval_every=10", *extra]


@pytest.mark.slow
def test_sweeps_started_at_once_in_one_folder_get_their_own_identity_or_are_refused(tiny_corpus, tmp_path):
    """Two of one experiment and one of another, started together in a fresh folder (one mlflow.db, one optuna.db,
    one ray_results): one of the first two is refused in one line, the other two run to the end, each with its own
    Tune folder, MLflow parent and Optuna study; nobody dies on the fresh databases' migrations."""
    same = [start_in_own_session(tmp_path, short_sweep(tiny_corpus), name) for name in ("a", "b")]
    other = start_in_own_session(tmp_path, short_sweep(tiny_corpus, "--experiment", "other"), "c")
    for sweep in (*same, other):
        sweep.wait(timeout=WAIT_S)
    errors = {name: (tmp_path / f"{name}.err").read_text() for name in ("a", "b", "c")}
    assert sorted(s.returncode for s in same) == [0, 2] and other.returncode == 0, errors
    refused = errors["ab"[[s.returncode for s in same].index(2)]].strip()
    assert len(refused.splitlines()) == 1 and "another sweep of experiment 'lr_warmup' is running" in refused
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for experiment in ("lr_warmup", "other"):
        found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        parents = [r for r in found if r.data.tags.get("gptsweep.role") == "sweep"]
        children = [r for r in found if r.data.tags.get("gptsweep.role") == "trial"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 1
        assert children[0].data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert len(list((tmp_path / "ray_results").glob("lr_warmup_*"))) == 1
    assert len(list((tmp_path / "ray_results").glob("other_*"))) == 1
    studies = subprocess.run([sys.executable, "-c", "import optuna, sys; print(len(optuna.get_all_study_names("
                              f"'sqlite:///{tmp_path / 'optuna.db'}')))"], capture_output=True, text=True)
    assert studies.stdout.strip() == "2", studies.stderr


@pytest.mark.slow
def test_a_tracking_server_down_at_the_start_is_not_bad_input_the_journal_holds_the_writes(tiny_corpus, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once the socket is closed
    sweep = subprocess.run(SWEEP + short_sweep(tiny_corpus, "--search", "random", "--mlflow-uri", down),
                           cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S,
                           env={**os.environ, "GPTSWEEP_TRACKING_WAIT_S": "1"})
    assert sweep.returncode == 0, sweep.stderr
    assert "is unreachable" in sweep.stderr and "python -m sweeps.engine.sync" in sweep.stderr
    (journal,) = (tmp_path / "ray_results").glob("lr_warmup_*/mlflow_journal.jsonl")
    ops = [json.loads(line)["op"] for line in journal.read_text().splitlines()]
    assert ops[0] == "sweep" and "result" in ops and ops[-1] == "end"


def test_a_sigterm_sent_to_the_process_and_then_its_group_is_one_stop_request():
    """`timeout` sends SIGTERM to the sweep and then to its group: Tune's graceful stop once, no 'stop at once'."""
    from sweeps.engine.signals import StopOnSignal

    requests = []
    saved = signal.getsignal(signal.SIGUSR1)
    try:
        with StopOnSignal():
            signal.signal(signal.SIGUSR1, lambda signum, frame: requests.append(signum))  # Tune's, in fit
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
            except KeyboardInterrupt:
                pytest.fail("the repeated SIGTERM was taken for a second signal (stop at once)")
            assert requests == [signal.SIGTERM]
            with pytest.raises(KeyboardInterrupt):  # another signal still stops at once
                os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGUSR1, saved)
