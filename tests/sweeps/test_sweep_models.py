"""pytest tests/sweeps/test_sweep_models.py — a real smoke sweep (Ray Tune, SQLite MLflow) saves, names and registers its
best model, which generate and transformers then load.

Two trials on a toy corpus: one completes, one diverges (lr 1e30), so only one may have a model.
"""
from __future__ import annotations

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from ray import tune
from transformers import AutoModelForCausalLM

from sweeps.engine.launch import run_sweep
from sweeps.engine.plan import Dim
from trainer import result_schema as R
from trainer.export import main as export_main
from trainer.generate import main as generate_main

pytestmark = pytest.mark.slow


def space(cfg):
    return {"optim.lr": Dim(tune.choice([3e-3, 1e30]), grid=(3e-3, 1e30))}


@pytest.fixture
def sweep(tmp_path, tiny_corpus, capsys):
    """(tracking URI, the sweep's console output) after a 2-trial grid sweep with --register tiny_best."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["--preset", "smoke", "--data", str(tiny_corpus), "--tokenizer", "bpe:300", "--finetune-train", "none",
            "--search", "grid", "--storage", str(tmp_path / "ray_results"), "--mlflow-uri", uri,
            "--experiment", "models", "--register", "tiny_best"]
    try:
        assert run_sweep("models", space, argv) == 0
    finally:
        ray.shutdown()
    return uri, capsys.readouterr().out


def test_the_best_trial_logs_a_safetensors_model_that_generate_and_transformers_load(sweep, tmp_path, capsys):
    uri, console = sweep
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("models").experiment_id])
    parent = next(r for r in runs if r.data.tags.get(R.ROLE) == R.ROLE_SWEEP)
    trials = {r.data.tags[R.OUTCOME]: r.info.run_id for r in runs if r.data.tags.get(R.ROLE) == R.ROLE_TRIAL}
    assert sorted(trials) == [R.COMPLETED, R.DIVERGED]
    best_uri = f"runs:/{trials[R.COMPLETED]}/model"
    assert parent.data.tags[R.BEST_MODEL_URI] == best_uri and best_uri in parent.data.tags["mlflow.note.content"]
    assert f"best model: {best_uri}" in console and "registered: models:/tiny_best/1" in console
    files = {f.path for f in client.list_artifacts(trials[R.COMPLETED], "model")}
    assert files == {"model/model.safetensors", "model/config.json", "model/tokenizer.json"}  # no pickle
    assert client.list_artifacts(trials[R.DIVERGED], "model") == []

    capsys.readouterr()
    assert generate_main(["models:/tiny_best/1", "--mlflow-uri", uri, "--prompt", "The old", "--seed", "0",
                          "--max-new-tokens", "6"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("The old") and len(text.strip()) > len("The old")
    assert export_main([best_uri, "--mlflow-uri", uri, "--hf", str(tmp_path / "hf")]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    assert hf.config.n_positions == 16 and hf.config.vocab_size == 300
