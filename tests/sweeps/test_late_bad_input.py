"""pytest tests/sweeps/test_late_bad_input.py — inputs that were found wrong only after Ray started (or after training) are
refused in one line, exit 2, before anything is written; and the smaller faults of the same kind.

    pytest tests/sweeps/test_late_bad_input.py -q
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from sweeps.engine.console_text import browse_hint, error_line
from sweeps.engine.launch import run_sweep
from sweeps.engine.tracking.journal import Journal, Outbox
from sweeps.engine.tracking.writer import MlflowWriter
from sweeps.lr_warmup import space
from trainer.__main__ import main as train_main
from trainer.result_schema import SweepIdentity


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nothing listens there


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in (root ignores permission bits: /proc refuses new files)."""
    if os.geteuid() == 0:
        return Path("/proc/gptsweep-storage")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "results"


def _read_only_database(tmp_path: Path) -> Path:
    database = tmp_path / "db" / "mlflow.db"
    database.parent.mkdir()
    database.write_bytes(b"")
    if os.geteuid() != 0:
        database.chmod(0o444)
    elif shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(database)]).returncode != 0:
        pytest.skip("root can write any file without chattr +i")
    return database


SWEEP_CASES = {  # flags → a word the one-line refusal must contain
    "read-only --storage": (lambda t: ["--storage", str(_read_only_folder(t))], "--storage"),
    "unknown URI scheme": (lambda t: ["--mlflow-uri", "foo://x"], "--mlflow-uri"),
    "URI without a scheme": (lambda t: ["--mlflow-uri", "garbage"], "--mlflow-uri"),
    "read-only sqlite file": (lambda t: ["--mlflow-uri", f"sqlite:///{_read_only_database(t)}"], "cannot write"),
    "sqlite in a missing folder": (lambda t: ["--mlflow-uri", f"sqlite:///{t}/missing/mlflow.db"], "does not exist"),
    "empty --experiment": (lambda t: ["--experiment", ""], "--experiment"),
    "--experiment outside --storage": (lambda t: ["--experiment", "../../x"], "--experiment"),
    "negative --seed": (lambda t: ["--seed", "-1"], "--seed"),
    "--address that does not answer": (lambda t: ["--address", f"127.0.0.1:{_closed_port()}"], "does not answer"),
}


@pytest.mark.parametrize("case", SWEEP_CASES)
def test_a_late_bad_sweep_input_is_refused_before_ray_starts_and_nothing_is_written(
        tiny_corpus, tmp_path, monkeypatch, capsys, case):
    flags, word = SWEEP_CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = ["--preset", "smoke", "--data", str(tiny_corpus), "--tokenizer", "bpe:300", "--finetune-train", "none",
            *flags(tmp_path)]
    try:
        assert run_sweep("lr_warmup", space, argv) == 2
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "db" / "mlflow.db")], capture_output=True)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and word in err, err
    assert not ray.is_initialized()
    assert list(work.iterdir()) == []  # no mlflow.db, optuna.db or ray_results
    assert not (tmp_path / "missing").exists()


TRAINER_CASES = {
    "unwritable --out": (lambda t: ["--out", str(_read_only_folder(t))], "--out"),
    "finetune.lr=inf": (lambda t: ["--out", str(t / "o"), "--set", "finetune.lr=inf"], "finetune.lr"),
    "finetune.epochs=-1": (lambda t: ["--out", str(t / "o"), "--set", "finetune.epochs=-1"], "finetune.epochs"),
    "finetune.probe_steps=-1": (lambda t: ["--out", str(t / "o"), "--set", "finetune.probe_steps=-1"],
                                "probe_steps"),
}


@pytest.mark.parametrize("case", TRAINER_CASES)
def test_a_bad_single_run_input_is_refused_before_training(tiny_corpus, tmp_path, capsys, case):
    flags, word = TRAINER_CASES[case]
    argv = ["--preset", "smoke", "--data", str(tiny_corpus), "--tokenizer", "bpe:300", *flags(tmp_path)]
    assert train_main(argv) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and word in captured.err, captured.err
    assert "cache" not in captured.out  # refused before the corpus was even read
    assert not (tmp_path / "o").exists()


def test_a_trials_error_is_shown_by_its_own_text_not_by_rays_actor_name():
    cause = RuntimeError("checkpoint /x/state.pt is missing; put back an intact copy")
    wrapped = ray.exceptions.RayTaskError("ImplicitFunc.train", "\x1b[36mray::ImplicitFunc.train()\x1b[39m "
                                          "(pid=1, ip=10.0.0.1)\nTraceback ...\nRuntimeError: checkpoint", cause)
    assert error_line(wrapped.as_instanceof_cause()) == f"RuntimeError: {cause}"
    assert error_line(ValueError("bad\nmore")) == "ValueError: bad"


def test_the_summary_suggests_the_browser_for_a_server_and_mlflow_ui_for_a_database():
    assert browse_hint("http://10.0.0.5:5000/") == "browse: open http://10.0.0.5:5000 in a browser"
    assert "mlflow ui --backend-store-uri sqlite:////a/mlflow.db" in browse_hint("sqlite:////a/mlflow.db")


class DiskFullFirst:
    """The real writer behind a disk that is full for the first `failures` writes."""

    def __init__(self, writer: MlflowWriter, failures: int):
        self.writer, self.failures = writer, failures

    def apply(self, op: dict) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.writer.apply(op)


def test_a_full_disk_keeps_writes_in_the_journal_until_there_is_room(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = DiskFullFirst(MlflowWriter(SweepIdentity(uri, "full", str(tmp_path / "sweep"))), failures=1)
    outbox = Outbox(Journal(tmp_path / "sweep"), writer, uri)
    outbox.send({"op": "sweep", "run_name": "s", "searched": [], "params": {}, "corpus_metrics": {"floor": 1.0}})
    assert len(outbox.queue) == 1 and len(Journal(tmp_path / "sweep").pending()) == 1  # kept, not raised
    assert "no disk space left" in capsys.readouterr().err
    assert outbox.drain(30)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert run.data.metrics == {"floor": 1.0} and Journal(tmp_path / "sweep").pending() == []
