"""pytest tests/sweeps/test_reliability.py — sweeps that survive what goes wrong: a diverging trial, a trial whose
worker is SIGKILLed, a driver stopped by SIGINT/SIGTERM and resumed (checkpoints: tests/sweeps/test_checkpoints.py;
MLflow bookkeeping: tests/sweeps/tracking/test_tune_events.py).

    pytest tests/sweeps/test_reliability.py -m "not slow"      # the unit tests, seconds
    pytest tests/sweeps/test_reliability.py -k interrupted     # one end-to-end case (a real sweep as a subprocess)
"""
from __future__ import annotations

import math
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sweeps.engine.launch import run_sweep
from sweeps.engine.plan import Dim
from tests.support import runs_of, steps_of, sweep_args
from tests.sweeps.sweep_processes import (checkpoints, interrupt_during_the_second_trial, kill_a_trial_worker,
                                          start_sweep)
from trainer.result_schema import DIVERGED_LOSS


# --- 1. divergence -----------------------------------------------------------------------------------------
def test_optuna_accepts_the_value_a_diverged_trial_reports(smoke_trainer):
    """The loop's diverged report is finite, so Optuna records the trial as COMPLETE (ranked last); the NaN it
    would otherwise see is refused and leaves the trial RUNNING forever."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    record = smoke_trainer(**{"optim.lr": 1e4, "optim.grad_clip": 0}).run()
    assert record.metrics["diverged"] == 1 and record.metrics["step"] < 12
    assert record.metrics["val_loss"] == DIVERGED_LOSS
    assert all(math.isfinite(record.metrics[k]) for k in ("train_loss", "val_loss", "val_ppl", "val_acc"))
    for value, state in ((record.metrics["val_loss"], "COMPLETE"), (math.nan, "RUNNING")):
        searcher = OptunaSearch(seed=0)
        searcher.set_search_properties("val_loss", "min", {"optim.lr": tune.loguniform(1e-4, 1e4)})
        searcher.suggest("t0")
        searcher.on_trial_complete("t0", result={**record.metrics, "val_loss": value})
        trial = searcher._ot_study.trials[0]  # the study itself: OptunaSearch has no public accessor
        assert trial.state.name == state
        assert trial.values == ([DIVERGED_LOSS] if state == "COMPLETE" else None)


@pytest.mark.slow
def test_a_diverging_trial_stops_is_tagged_failed_and_the_sweep_carries_on(inputs):
    def space(cfg):  # sequential trials, the absurd learning rate in the middle: the sweep must go on after it
        return {"optim.lr": Dim(None, grid=(3e-3, 1e4, 1e-3)), "optim.warmup_steps": Dim(None, grid=(0,))}

    args = sweep_args(inputs, "diverge", "--search", "grid", "--max-concurrent", "1",
                      "--set", "optim.grad_clip=0")
    assert run_sweep("diverge", space, args) == 0
    client, parents, children = runs_of(inputs, "diverge")
    by_lr = {float(c.data.params["optim.lr"]): c for c in children}
    assert len(parents) == 1 and len(children) == 3 and set(by_lr) == {3e-3, 1e4, 1e-3}
    diverged = by_lr[1e4]
    assert diverged.data.tags["gptsweep.outcome"] == "diverged" and diverged.info.status == "FAILED"
    assert diverged.data.metrics["val_loss"] == DIVERGED_LOSS and diverged.data.metrics["diverged"] == 1
    assert math.isfinite(diverged.data.metrics["val_ppl"]) and "finetune_acc" not in diverged.data.metrics
    assert max(steps_of(client, diverged.info.run_id)) < 12  # stopped at the first non-finite loss
    for healthy in (by_lr[3e-3], by_lr[1e-3]):
        assert healthy.data.tags["gptsweep.outcome"] == "completed" and healthy.info.status == "FINISHED"
        assert healthy.data.metrics["val_loss"] < 10 and "finetune_acc" in healthy.data.metrics
    assert diverged.info.start_time < max(by_lr[3e-3].info.start_time, by_lr[1e-3].info.start_time)
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["gptsweep.best_trial_id"] != diverged.data.tags["gptsweep.trial_id"]


# --- 2. a crashed trial ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the trial's worker process through /proc")
def test_a_killed_trial_restarts_from_its_checkpoint_and_continues_its_mlflow_run(inputs):
    def space(cfg):
        return {"optim.lr": Dim(None, grid=(3e-3,)), "optim.warmup_steps": Dim(None, grid=(10,))}

    killed: list[int] = []
    seen: list[str] = []  # the command lines below this process when the killer looked, for the failure message
    storage = inputs / "ray_results"

    def kill_the_worker_once_it_has_checkpointed() -> None:
        # Files, not MLflow: opening an MLflow client takes ~0.5 s, more on a busy 2-core machine, and the trial
        # has ~4 s left. checkpoint_000002 (step 150) is on disk only after the worker handed over reports 0 and 1,
        # so Tune holds a checkpoint to restart from.
        def latest_checkpoint() -> int:
            found = (re.fullmatch(r"checkpoint_(\d+)", path.name) for path in checkpoints(storage, "crash"))
            return max((int(name[1]) for name in found if name), default=-1)

        deadline = time.monotonic() + 180
        while latest_checkpoint() < 2:
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.01)
        kill_a_trial_worker(1, seen, killed)

    killer = threading.Thread(target=kill_the_worker_once_it_has_checkpointed, daemon=True)
    killer.start()
    args = sweep_args(inputs, "crash", "--search", "grid", "--finetune-train", "none",
                      "--set", "train.max_steps=1000", "--set", "train.eval_every=50")
    assert run_sweep("crash", space, args) == 0  # max_failures=1 (the smoke budget): one restart allowed
    killer.join(5)
    assert len(killed) == 1, f"no single trial worker among the processes {seen}"
    client, parents, children = runs_of(inputs, "crash")
    assert len(parents) == 1 and len(children) == 1  # continued, not duplicated
    run = children[0]
    assert run.info.status == "FINISHED" and run.data.tags["gptsweep.outcome"] == "completed"
    assert run.data.tags["gptsweep.restarts"] == "1"
    assert int(run.data.tags["gptsweep.resumed_from_step"]) >= 50  # from a checkpoint, not from step 0
    for key in ("val_loss", "train_loss"):
        assert steps_of(client, run.info.run_id, key) == list(range(50, 1001, 50))  # no gap, no repeat


# --- 3. an interrupted sweep -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_sweep_stops_cleanly_and_resume_finishes_it(tiny_corpus, tmp_path, signum):
    sweep = start_sweep(tmp_path, tiny_corpus)
    interrupt_during_the_second_trial(tmp_path, sweep, signum)  # it must stop within the wait's 60 s timeout
    err = (tmp_path / "err.txt").read_text()
    assert sweep.returncode == 128 + signum, err
    command = err.split("continue from their last checkpoints with:\n", 1)[1].splitlines()[0].strip()
    assert command.startswith(f"cd {shlex.quote(str(tmp_path))} && ") and command.endswith(" --resume")

    client, (parent,), (first, second) = runs_of(tmp_path, "lr_warmup")
    assert parent.info.status == "KILLED"  # not left RUNNING while it waits for --resume
    assert (first.info.status, first.data.tags["gptsweep.outcome"]) == ("FINISHED", "completed")
    assert (second.info.status, second.data.tags["gptsweep.outcome"]) == ("KILLED", "interrupted")
    if signum == signal.SIGINT:
        return  # the resume path is the same after either signal; run it once (below, after SIGTERM)

    resumed = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    _, parents, after = runs_of(tmp_path, "lr_warmup")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert [c.info.run_id for c in after] == [first.info.run_id, second.info.run_id]
    assert all((c.info.status, c.data.tags["gptsweep.outcome"]) == ("FINISHED", "completed") for c in after)
    assert after[0].info.end_time == first.info.end_time  # the finished trial was kept, not re-run
    assert "gptsweep.resumed_from_step" not in after[0].data.tags
    assert int(after[1].data.tags["gptsweep.resumed_from_step"]) >= 50  # continued from its checkpoint
    for child in after:
        assert steps_of(client, child.info.run_id) == list(range(50, 601, 50))
