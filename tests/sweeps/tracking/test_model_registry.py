"""pytest tests/sweeps/tracking/test_model_registry.py — model folders in a real MLflow (SQLite): runs:/ and models:/ URIs in
generate and export, the registry, and a run without a model.

No Ray: a run is made with the MLflow client, as the sweep's writer makes them (tests/test_sweep_models.py runs
the whole sweep).
"""
from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM

from sweeps.engine.tracking.model_artifacts import log_model_folder, tag_best_model
from sweeps.engine.tracking.registry import register_model
from sweeps.engine.tracking.writer import ensure_experiment
from trainer import result_schema as R
from trainer.export import main as export_main
from trainer.generate import main as generate_main
from trainer.model_folder import load_model_folder, save_model_folder


@pytest.fixture
def store(tmp_path, smoke_trainer):
    """(tracking URI, client, id of a run holding a model folder, id of a run without one)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment_id = ensure_experiment(client, "models")
    trainer = smoke_trainer()
    folder = save_model_folder(tmp_path / "model", trainer.model, trainer.cfg, trainer.tokenizer)
    with_model, without = (client.create_run(experiment_id).info.run_id for _ in range(2))
    log_model_folder(client, with_model, str(folder))
    return uri, client, with_model, without


def test_runs_and_models_uris_work_in_generate_and_export(store, tmp_path, capsys):
    uri, client, run_id, _ = store
    assert {f.path for f in client.list_artifacts(run_id, "model")} == {
        "model/model.safetensors", "model/config.json", "model/tokenizer.json"}
    assert register_model(client, f"runs:/{run_id}/model", "tiny") == "1"
    assert register_model(client, f"runs:/{run_id}/model", "tiny") == "1"  # the same model: no second version
    capsys.readouterr()
    for model in (f"runs:/{run_id}/model", "models:/tiny/1"):
        assert generate_main([model, "--mlflow-uri", uri, "--prompt", "The cat", "--greedy",
                              "--max-new-tokens", "5"]) == 0
        assert capsys.readouterr().out.startswith("The cat")
    assert export_main(["models:/tiny/1", "--mlflow-uri", uri, "--hf", str(tmp_path / "hf")]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ours = load_model_folder(tmp_path / "model")
    ids = torch.tensor([ours.tokenizer.encode("A quiet town")])
    with torch.no_grad():
        assert (hf(ids).logits - ours.model(ids)[0]).abs().max().item() < 1e-4


def test_the_parent_names_the_best_model_only_when_its_trial_saved_one(store):
    _, client, with_model, without = store
    parent = client.create_run(client.get_run(with_model).info.experiment_id).info.run_id
    tag_best_model(client, parent, with_model)
    assert client.get_run(parent).data.tags[R.BEST_MODEL_URI] == f"runs:/{with_model}/model"
    tag_best_model(client, parent, without)  # a grown sweep's new best, trained with train.save_model=false
    assert R.BEST_MODEL_URI not in client.get_run(parent).data.tags


@pytest.mark.parametrize("model, expected", [("runs:/{without}/model", "cannot fetch runs:/"),
                                             ("runs:/0123456789abcdef0123456789abcdef/model", "cannot fetch"),
                                             ("models:/no_such_model/1", "cannot fetch models:/no_such_model/1")])
def test_a_run_without_a_model_or_an_unknown_name_exits_2_in_one_line(store, capsys, model, expected):
    uri, _, _, without = store
    capsys.readouterr()
    assert generate_main([model.format(without=without), "--mlflow-uri", uri, "--prompt", "The"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and expected in err


def test_a_missing_database_is_named_and_not_created(tmp_path, capsys):
    database = tmp_path / "typo.db"
    assert generate_main(["runs:/abc/model", "--mlflow-uri", f"sqlite:///{database}", "--prompt", "The"]) == 2
    assert "no MLflow database" in capsys.readouterr().err and not database.exists()
