"""Helpers the tests import (fixtures live in conftest.py files, which no test imports).

    pytest tests            (tests import these as `from tests.support import ...`)
"""
from __future__ import annotations

import csv
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from trainer.config import build_config, flatten

REPO = Path(__file__).resolve().parents[1]
SWEEP = [sys.executable, str(REPO / "sweeps" / "lr_warmup.py")]  # the main sweep, as a user runs it

_WORDS = ("the a one every small old red quiet river cat town garden letter machine child teacher storm "
          "found carried watched opened built remembered near under across after before slowly again").split()


def make_tiny_documents(n: int = 300) -> list[str]:
    """n short English-ish documents of two to four sentences each (deterministic)."""
    rng = random.Random(0)
    sentence = lambda: " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 9))).capitalize() + "."
    return [" ".join(sentence() for _ in range(rng.randint(2, 4))) for _ in range(n)]


def write_sweep_inputs(root: Path) -> Path:
    """root/corpus.txt (the tiny documents) and AG-News-shaped tables root/news_{train,test}.csv."""
    docs = make_tiny_documents()
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    for split, rows in (("train", docs[:60]), ("test", docs[60:100])):
        with open(root / f"news_{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((text, i % 4) for i, text in enumerate(rows))
    return root


def sweep_args(root: Path, experiment: str, *extra: str) -> list[str]:
    """A smoke sweep's flags on write_sweep_inputs(root), tracked in root/mlflow.db."""
    return ["--preset", "smoke", "--data", str(root / "corpus.txt"), "--tokenizer", "bpe:300",
            "--finetune-train", str(root / "news_train.csv"), "--finetune-test", str(root / "news_test.csv"),
            "--storage", str(root / "ray_results"), "--mlflow-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--experiment", experiment, *extra]


def runs_of(root: Path, experiment: str):
    """(client, parent runs, child runs in start order) of an experiment in root/mlflow.db."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000, order_by=["start_time"])
    parents = [r for r in runs if r.data.tags.get("gptsweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("gptsweep.role") == "trial"]
    return client, parents, children


def steps_of(client: MlflowClient, run_id: str, key: str = "val_loss") -> list[int]:
    """The steps of a run's metric in the order they were logged."""
    return [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))]


def checkpoint_at_step_8_then_die(smoke_trainer, settings: dict, folder: Path) -> Path:
    """A smoke run that checkpoints into `folder` at every eval and dies right after its step-8 checkpoint."""
    from sweeps.engine.trainable import save_checkpoint

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
    return folder


class TuneTrial(SimpleNamespace):
    """What the tracking callback (sweeps.engine.tracking.tune_events) reads of a Tune Trial: a smoke config."""

    def __init__(self, trial_id: str, **config):
        super().__init__(trial_id=trial_id, config={**flatten(build_config("smoke")), **config}, status="RUNNING",
                         last_result={}, checkpoint=None)

    def __str__(self) -> str:
        return self.trial_id
