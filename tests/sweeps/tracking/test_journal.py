"""pytest tests/sweeps/tracking/test_journal.py — the journal between a sweep and MLflow
(sweeps/engine/tracking/journal.py), without a server: lines are applied in order and once, an unreachable
server is retried after 2, 4, 8, ... 30 s without blocking, a resumed sweep or `python -m sweeps.engine.sync`
sends the rest, and a sweep whose server was down the whole time ends up in MLflow complete, params and tags
included. (A real `mlflow server` killed mid-sweep: test_tracking_outage.py.)
"""
from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import requests

from sweeps.engine import sync
from sweeps.engine.tracking import journal as journal_module
from sweeps.engine.tracking.journal import CLIENT_ENV, Journal, Outbox
from sweeps.engine.tracking.tune_events import MLflowTracking, end_wait_s
from tests.support import TuneTrial, runs_of
from trainer.result_schema import SweepIdentity


class Clock:
    """The journal's time: advances only when the outbox sleeps."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FlakyWriter:
    """Applies ops to a list; the first `failures` tries raise what MLflow's client raises for a server that is
    down (or `error` instead, for a bad request)."""

    def __init__(self, clock: Clock, failures: int = 0, error: Exception | None = None):
        self.clock, self.failures, self.error = clock, failures, error
        self.applied, self.tries = [], []

    def apply(self, op: dict) -> None:
        self.tries.append(self.clock.now)
        if self.error is not None:
            raise self.error
        if self.failures:
            self.failures -= 1
            raise requests.exceptions.ConnectionError("Connection refused")
        self.applied.append(op)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(journal_module, "time", SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep))
    return clock


def ops(n: int) -> list[dict]:
    return [{"op": "result", "n": i} for i in range(n)]


def test_an_unreachable_server_is_retried_after_doubling_waits_and_every_line_lands_in_order(tmp_path, clock,
                                                                                               capsys):
    writer = FlakyWriter(clock, failures=6)
    outbox = Outbox(Journal(tmp_path), writer, "http://tracking")
    for op in ops(3):
        outbox.send(op)  # the first try fails at t=0; the others wait for the next try instead of blocking
    assert writer.tries == [0.0] and writer.applied == []
    assert outbox.drain(budget_s=300)
    assert writer.tries == [0, 2, 6, 14, 30, 60, 90, 90, 90]  # waits 2, 4, 8, 16, 30 (the cap), 30
    assert writer.applied == ops(3) and Journal(tmp_path).done() == 3 and Journal(tmp_path).pending() == []
    assert capsys.readouterr().err.count("is unreachable") == 1  # one warning, not one per try


def test_a_drain_gives_up_at_its_budget_and_a_resume_sends_the_rest_once(tmp_path, clock):
    down, up = FlakyWriter(clock, failures=10**6), FlakyWriter(clock)
    first = Outbox(Journal(tmp_path), down, "http://tracking")
    first.send(ops(4)[0])  # the server is down
    first.writer = up
    clock.sleep(2)
    first.send(ops(4)[1])  # back: the waiting line and this one land
    first.writer = down
    for op in ops(4)[2:]:
        first.send(op)  # down again, until the sweep's end
    assert not first.drain(budget_s=5)
    assert up.applied == ops(4)[:2] and Journal(tmp_path).done() == 2 and Journal(tmp_path).pending() == ops(4)[2:]

    resumed = FlakyWriter(clock)  # a --resume of the sweep, or python -m sweeps.engine.sync
    assert Outbox(Journal(tmp_path), resumed, "http://tracking").flush()
    assert resumed.applied == ops(4)[2:]  # what was missing, in order, and nothing applied before
    again = FlakyWriter(clock)
    assert Outbox(Journal(tmp_path), again, "http://tracking").flush() and again.applied == []


def test_a_bad_request_is_raised_not_retried(tmp_path, clock):
    writer = FlakyWriter(clock, error=ValueError("INVALID_PARAMETER_VALUE"))
    with pytest.raises(ValueError):
        Outbox(Journal(tmp_path), writer, "http://tracking").send(ops(1)[0])


def test_a_sweeps_end_waits_60_s_for_the_server_by_default(monkeypatch):
    monkeypatch.delenv("GPTSWEEP_TRACKING_WAIT_S", raising=False)
    assert end_wait_s() == 60
    monkeypatch.setenv("GPTSWEEP_TRACKING_WAIT_S", "5")
    assert end_wait_s() == 5


def test_a_sweep_whose_server_was_down_throughout_is_complete_in_mlflow_after_sync(tmp_path, monkeypatch):
    """Every write of a real tracking callback goes to a closed port; sync then sends the journal to SQLite."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once the socket is: connection refused
    for key, value in CLIENT_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GPTSWEEP_TRACKING_WAIT_S", "0")
    sweep_path = str(tmp_path / "exp_1")
    tracking = MLflowTracking(SweepIdentity(down, "exp", sweep_path), {"sweep.search": "optuna"}, ["optim.lr"])
    tracking.setup(total_num_samples=1)
    trial = TuneTrial("t_00000", **{"optim.lr": 2e-3})
    tracking.on_trial_start(0, [trial], trial)
    for step in (4, 8, 12):
        trial.last_result = {"step": step, "val_loss": 6.0 - step / 4, "val_ppl": 50.0 - step, "train_loss": 5.0,
                             "max_steps": 12}
        tracking.on_trial_result(0, [trial], trial, dict(trial.last_result))
    trial.status = "TERMINATED"
    tracking.on_trial_complete(0, [trial], trial)
    tracking.on_experiment_end([trial])
    assert not tracking.synced

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sync.main(["--sweep", sweep_path, "--mlflow-uri", uri]) == 0
    client, (parent,), (child,) = runs_of(tmp_path, "exp")
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.search"] == "optuna"
    assert parent.data.tags["gptsweep.best_trial_id"] == "t_00000" and parent.data.tags["best.optim.lr"] == "0.002"
    assert parent.data.metrics["best_val_ppl"] == 38.0
    assert child.info.status == "FINISHED" and child.data.tags["gptsweep.outcome"] == "completed"
    assert child.data.params["optim.lr"] == "0.002" and child.data.params["train.max_steps"] == "12"
    assert [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, "val_ppl")] == [
        (4, 46.0), (8, 42.0), (12, 38.0)]
    assert sync.main(["--sweep", sweep_path, "--mlflow-uri", uri]) == 0  # nothing left: nothing sent twice
    assert len(client.get_metric_history(child.info.run_id, "val_ppl")) == 3
