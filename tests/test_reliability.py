"""pytest tests/test_reliability.py — sweeps that survive what goes wrong: a diverging trial, a trial whose worker
is SIGKILLed, a driver stopped by SIGINT/SIGTERM and resumed, corrupt checkpoints; MLflow bookkeeping that stays
exact through all of it; an MLflow UI that binds to 127.0.0.1 only.

    pytest tests/test_reliability.py -m "not slow"      # the unit tests, seconds
    pytest tests/test_reliability.py -k interrupted     # one end-to-end case (a real sweep as a subprocess)
"""
from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, SWEEP
from sweeps.runner import Dim, run_sweep
from test_sweeps import inputs, runs_of, sweep_args  # noqa: F401  (inputs is a module fixture)
from trainer.loop import DIVERGED_LOSS


def steps_of(client: MlflowClient, run_id: str, key: str = "val_loss") -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))]


def strictly_increasing(steps: list[int]) -> bool:
    return all(a < b for a, b in zip(steps, steps[1:]))


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
def _descendants(pid: int) -> list[int]:
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


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _checkpoints(storage: Path, experiment: str) -> list[Path]:
    return list(storage.glob(f"{experiment}_*/*/checkpoint_*"))


def _wait_for_reports(storage: Path, db: Path, experiment: str, done, seconds: float = 180) -> None:
    """Until `done(last val_loss step of each trial, in start order)`: the driver has then registered those
    reports' checkpoints. MLflow is read only once a checkpoint exists, when the driver has long created the
    database (two processes creating one schema race)."""
    deadline = time.monotonic() + seconds
    while not _checkpoints(storage, experiment):
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
            found = (re.fullmatch(r"checkpoint_(\d+)", path.name) for path in _checkpoints(storage, "crash"))
            return max((int(name[1]) for name in found if name), default=-1)

        deadline = time.monotonic() + 180
        while latest_checkpoint() < 2:
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.01)
        # "ray::ImplicitFunc.train" while the driver waits on a train() call, "ray::ImplicitFunc" between calls
        seen.extend(_cmdline(p) for p in _descendants(os.getpid()))
        workers = [p for p in _descendants(os.getpid()) if _cmdline(p).startswith("ray::ImplicitFunc")]
        if len(workers) == 1:
            os.kill(workers[0], signal.SIGKILL)
            killed.append(workers[0])

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
def _start_sweep(tmp_path: Path, corpus: Path, *extra: str) -> subprocess.Popen:
    """Two sequential 600-step trials (unless `extra` flags say otherwise), Tune's results and MLflow in the default
    places under tmp_path."""
    flags = ["--preset", "smoke", "--data", str(corpus), "--tokenizer", "bpe:300", "--finetune-train", "none",
             "--search", "random", "--scheduler", "fifo", "--num-samples", "2", "--max-concurrent", "1",
             "--set", "train.max_steps=600", "--set", "train.eval_every=50", *extra]
    return subprocess.Popen(SWEEP + flags, cwd=tmp_path, stdout=open(tmp_path / "out.txt", "w"),
                            stderr=open(tmp_path / "err.txt", "w"))


def _interrupt_during_the_second_trial(tmp_path: Path, sweep: subprocess.Popen, signum: int) -> float:
    def second_trial_reported(steps: list[int]) -> bool:
        assert sweep.poll() is None, (tmp_path / "err.txt").read_text()
        return len(steps) == 2 and steps[1] >= 50

    _wait_for_reports(tmp_path / "ray_results", tmp_path / "mlflow.db", "lr_warmup", second_trial_reported)
    sweep.send_signal(signum)
    sent = time.monotonic()
    sweep.wait(timeout=60)
    return time.monotonic() - sent


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_sweep_stops_cleanly_and_resume_finishes_it(tiny_corpus, tmp_path, signum):
    sweep = _start_sweep(tmp_path, tiny_corpus)
    stopping_s = _interrupt_during_the_second_trial(tmp_path, sweep, signum)
    err = (tmp_path / "err.txt").read_text()
    assert sweep.returncode == 128 + signum, err
    assert stopping_s < 30, f"took {stopping_s:.0f}s to stop"
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


# --- 6. checkpoint integrity -------------------------------------------------------------------------------
def test_a_truncated_checkpoint_fails_naming_its_path(smoke_trainer, tmp_path):
    from ray import tune

    from trainer.trainable import load_checkpoint, save_checkpoint

    trainer, folder = smoke_trainer(), tmp_path / "checkpoint"
    folder.mkdir()
    trainer.run()
    save_checkpoint(trainer, folder)
    path = folder / "state.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RuntimeError, match=re.escape(f"corrupt checkpoint {path}")):
        load_checkpoint(smoke_trainer(), tune.Checkpoint.from_directory(str(folder)))


def test_checkpoints_are_written_atomically_and_a_partial_file_is_never_loaded(smoke_trainer, tmp_path,
                                                                               monkeypatch):
    from ray import tune

    from trainer.trainable import load_checkpoint, save_checkpoint

    trainer, folder = smoke_trainer(), tmp_path / "checkpoint"
    folder.mkdir()
    trainer.run()
    save_checkpoint(trainer, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["state.pt"]
    good = (folder / "state.pt").read_bytes()

    def crash_mid_write(state, f):  # a crash (or kill) while the next checkpoint is being written
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(torch, "save", crash_mid_write)
        save_checkpoint(trainer, folder)
    assert (folder / "state.pt").read_bytes() == good and (folder / "state.pt.partial").exists()
    restored = smoke_trainer()
    load_checkpoint(restored, tune.Checkpoint.from_directory(str(folder)))  # the good one, not the partial
    assert restored.step == trainer.step == 12

    (folder / "state.pt").unlink()  # only the partial left: an error naming the checkpoint, not a load
    with pytest.raises(RuntimeError, match=r"state\.pt is missing \(only an unfinished state\.pt\.partial"):
        load_checkpoint(smoke_trainer(), tune.Checkpoint.from_directory(str(folder)))


def _leaves(value):
    """Every non-container value in a nest of dicts, lists and tuples."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def test_a_checkpoint_loaded_as_a_cuda_run_loads_it_restores_and_continues_bit_for_bit(smoke_trainer, tmp_path):
    """A restart loads state.pt to the CPU with weights_only=True, whatever the run's device (a CUDA run too: its
    RNG setters take CPU ByteTensors), and Pretrainer.load_state_dict moves it; the run then continues exactly."""
    import random

    import numpy as np
    from ray import tune

    from trainer.trainable import load_checkpoint, load_state, save_checkpoint

    settings = {"train.precision": "fp32", "model.dropout": 0.1}  # dropout: the RNG states must resume too
    straight = smoke_trainer(**settings)
    straight.run()
    folder = tmp_path / "checkpoint"
    folder.mkdir()

    class Killed(Exception):
        pass

    def checkpoint_then_die_at_step_8(record):
        save_checkpoint(interrupted, folder)
        if record.metrics["step"] == 8:
            raise Killed

    interrupted = smoke_trainer(**settings)
    with pytest.raises(Killed):
        interrupted.run(on_eval=checkpoint_then_die_at_step_8)
    draws = (torch.rand(3), np.random.random(3), random.random())  # what the saved RNG states produce next

    state = load_state(folder)
    assert all(isinstance(leaf, (torch.Tensor, int, float, str, bool, type(None))) for leaf in _leaves(state))
    assert all(leaf.device.type == "cpu" for leaf in _leaves(state) if isinstance(leaf, torch.Tensor))
    rng = state["rng"]
    for byte_state in [rng["torch"], *rng["cuda"]]:
        assert byte_state.dtype == torch.uint8 and byte_state.device.type == "cpu"
    resumed = smoke_trainer(**settings)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # anything else: the checkpoint must win
    load_checkpoint(resumed, tune.Checkpoint.from_directory(str(folder)))
    assert resumed.step == 8
    assert torch.equal(torch.rand(3), draws[0]) and np.array_equal(np.random.random(3), draws[1])
    assert random.random() == draws[2]
    load_checkpoint(resumed, tune.Checkpoint.from_directory(str(folder)))  # the draws above moved the states on
    resumed.run()
    assert [h["step"] for h in resumed.history] == [4, 8, 12]
    assert resumed.history[-1]["val_loss"] == straight.history[-1]["val_loss"]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)


class _RunsCode:
    """Unpickling this runs a shell command that writes a marker file: what a planted state.pt would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line_naming_it(smoke_trainer, tmp_path):
    from trainer.trainable import load_state

    folder, marker = tmp_path / "checkpoint", tmp_path / "code-ran"
    folder.mkdir()
    trainer = smoke_trainer()
    torch.save({**trainer.state_dict(), "model": _RunsCode(marker)}, folder / "state.pt")
    with pytest.raises(RuntimeError) as refused:
        load_state(folder)
    message = str(refused.value)
    assert message.startswith(f"refused checkpoint {folder / 'state.pt'}: ") and "\n" not in message
    assert "system" in message  # the global it refused, by name
    assert not marker.exists()
    torch.load(folder / "state.pt", weights_only=False)  # the file is live: trusted unpickling runs it
    assert marker.exists()


# --- MLflow bookkeeping: quotes in paths, write-once params, replayed steps, interrupted status --------------
class _Trial(SimpleNamespace):
    """What MLflowTracking reads of a Tune Trial."""

    def __init__(self, trial_id: str, **config):
        super().__init__(trial_id=trial_id, config={"preset": "smoke", **config}, status="RUNNING", last_result={})

    def __str__(self) -> str:
        return self.trial_id


def test_mlflow_tracking_survives_quotes_restarts_and_resumes(tmp_path):
    from trainer.tracking import MLflowTracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_path = str(tmp_path / "it's a \"sweep\"")  # quotes broke the parent's search filter

    def driver() -> MLflowTracking:  # a fresh driver process: what --resume starts
        tracking = MLflowTracking(uri, "exp", sweep_path, {"sweep.search": "grid"}, ["optim.lr"])
        tracking.setup(total_num_samples=1)
        return tracking

    first = driver()
    trial = _Trial("t_00000", **{"optim.lr": 1e-3})
    first.on_trial_start(0, [trial], trial)
    for step in (4, 8):
        first.on_trial_result(0, [trial], trial, {"step": step, "val_loss": 5.0 - step / 10, "train_loss": 5.0})
    first.on_trial_recover(0, [trial], trial)  # Tune restarts the crashed trial from its step-4 checkpoint
    for step in (8, 12):  # step 8 is replayed: logged already
        first.on_trial_result(0, [trial], trial, {"step": step, "val_loss": 9.0, "train_loss": 5.0, "start_step": 4})
    first.on_experiment_end([trial])  # interrupted: never completed
    client, parents, children = runs_of(tmp_path, "exp")
    assert [p.info.status for p in parents] == ["KILLED"] and children[0].info.status == "KILLED"
    assert children[0].data.tags["gptsweep.outcome"] == "interrupted"
    assert children[0].data.tags["gptsweep.restarts"] == "1"
    assert children[0].data.tags["gptsweep.resumed_from_step"] == "4"

    # A child created just before the driver died, before its params were logged.
    orphan = client.create_run(parents[0].info.experiment_id, tags={
        "mlflow.parentRunId": first.parent_run_id, "gptsweep.trial_id": "t_00001", "gptsweep.role": "trial"})

    second = driver()  # --resume: same parent, same child, params not re-logged with another rendering
    assert second.parent_run_id == first.parent_run_id
    assert client.get_run(second.parent_run_id).info.status == "RUNNING"
    second.on_trial_start(0, [], _Trial("t_00001", **{"optim.lr": 3e-3}))
    assert client.get_run(orphan.info.run_id).data.params["optim.lr"] == "0.003"  # the missing ones, logged
    trial = _Trial("t_00000", **{"optim.lr": 0.0010000000000000002})
    second.on_trial_start(0, [trial], trial)
    for step in (12, 16):
        second.on_trial_result(0, [trial], trial, {"step": step, "val_loss": 4.0, "train_loss": 4.0, "start_step": 12})
    trial.status, trial.last_result = "TERMINATED", {"step": 16, "val_loss": 4.0, "val_ppl": 54.6}
    second.on_trial_complete(0, [trial], trial)
    second.on_experiment_end([trial])
    client, parents, children = runs_of(tmp_path, "exp")
    child = next(c for c in children if c.info.run_id != orphan.info.run_id)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and child.info.status == "FINISHED"
    assert child.data.params["optim.lr"] == "0.001"
    assert steps_of(client, child.info.run_id) == [4, 8, 12, 16]
    assert [m.value for m in client.get_metric_history(child.info.run_id, "val_loss")
            if m.step == 8] == [5.0 - 0.8]  # the first report of step 8 is the one kept


# --- 7. the MLflow UI binds to 127.0.0.1 -------------------------------------------------------------------
def test_every_mlflow_ui_command_binds_to_localhost(capsys):
    from sweeps.launch import _print_summary

    plan = SimpleNamespace(tracking_uri="sqlite:////tmp/x/mlflow.db", dims={"optim.lr": None})
    _print_summary(plan, _NoResults(), wall_s=1.0, prepared_s=0.1)
    summary = capsys.readouterr().out
    texts = {"sweep summary": summary}
    for path in {REPO / "README.md", *REPO.glob("*.md"), *REPO.glob("*/*.md")}:  # the docs a person copies from
        texts[str(path.relative_to(REPO))] = path.read_text(encoding="utf-8")
    commands = [(where, line) for where, text in texts.items() for line in text.splitlines()
                if re.search(r"\bmlflow (ui|server)\b", line)]
    assert any(where == "README.md" for where, _ in commands) and any(w == "sweep summary" for w, _ in commands)
    for where, line in commands:
        assert "--host 127.0.0.1" in line, f"{where}: {line.strip()}"


class _NoResults(list):
    """A ResultGrid of no trials, as far as the summary looks."""
    errors: list = []
    experiment_path = "/tmp/x/ray_results/exp_1"
