"""pytest tests/trainer/test_model_folder.py — a trained model saved as a folder (safetensors, config, tokenizer) and back.

Fast: smoke-sized models on the tiny corpus with a 300-token BPE, no Ray, no MLflow.
"""
from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors import safe_open

from trainer.__main__ import main as train_main
from trainer.model import GPT
from trainer.model_folder import MODEL_FILES, load_model_folder, save_model_folder
from trainer.tokenizer import load_tokenizer


def scrambled(trainer):
    """The trainer's model with every parameter random: LayerNorms and biases too (a fresh model's are 1 and 0, so
    a swapped or dropped one would go unseen)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.normal_(0.0, 0.2)
    return trainer.model.eval()


@pytest.mark.parametrize("parametrization", ["sp", "mup"])
def test_a_saved_folder_loads_back_as_the_same_model_config_and_tokenizer(smoke_trainer, tmp_path, parametrization):
    trainer = smoke_trainer(**{"model.parametrization": parametrization, "model.base_width": 16})
    model = scrambled(trainer)
    folder = save_model_folder(tmp_path / "model", model, trainer.cfg, trainer.tokenizer)

    assert sorted(p.name for p in folder.iterdir()) == sorted(MODEL_FILES)
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:  # weights only, the tied matrix once
        assert "lm_head.weight" not in weights.keys() and "tok_emb.weight" in weights.keys()
    saved = load_model_folder(folder)
    ids = torch.tensor([trainer.tokenizer.encode("The old cat watched")])
    assert torch.equal(saved.model(ids)[0], model(ids)[0])
    assert saved.cfg.model == trainer.cfg.model and saved.cfg.optim == trainer.cfg.optim
    assert json.loads((folder / "config.json").read_text())["model.parametrization"] == parametrization
    text = "A quiet town near the garden."
    assert saved.tokenizer.encode(text) == trainer.tokenizer.encode(text)
    assert saved.tokenizer.eos_id == trainer.tokenizer.eos_id


def test_the_gpt2_tokenizer_travels_in_the_folder(shared_data, smoke_trainer, tmp_path):
    trainer = smoke_trainer()
    gpt2 = load_tokenizer("gpt2")
    cfg = trainer.cfg
    cfg.data.tokenizer, cfg.model.vocab_size = "gpt2", gpt2.vocab_size
    folder = save_model_folder(tmp_path / "model", GPT(cfg.model), cfg, gpt2)
    saved = load_model_folder(folder)
    text = "The history of Ünïcode, 1998 <|endoftext|> next"
    assert saved.tokenizer.encode(text) == gpt2.encode(text) and saved.tokenizer.vocab_size == 50257


def test_a_model_trained_on_a_gpu_loads_on_a_machine_without_one(smoke_trainer, tmp_path):
    trainer = smoke_trainer()
    trainer.cfg.train.device = "cuda:3"  # as config.json records a GPU trial's run
    folder = save_model_folder(tmp_path / "model", trainer.model, trainer.cfg, trainer.tokenizer)
    assert json.loads((folder / "config.json").read_text())["train.device"] == "cuda:3"
    assert load_model_folder(folder).cfg.train.device == "cpu"


def test_saving_again_replaces_the_folder_and_leaves_no_partial_one(smoke_trainer, tmp_path):
    trainer = smoke_trainer()
    folder = tmp_path / "out" / "model"
    folder.mkdir(parents=True)
    (folder / "stale.txt").write_text("from an older save")
    save_model_folder(folder, trainer.model, trainer.cfg, trainer.tokenizer)
    assert sorted(p.name for p in folder.iterdir()) == sorted(MODEL_FILES)
    assert [p.name for p in folder.parent.iterdir()] == ["model"]


def test_python_m_trainer_out_writes_the_model_folder_unless_told_not_to(tiny_corpus, tmp_path):
    common = ["--preset", "smoke", "--data", str(tiny_corpus), "--tokenizer", "bpe:300", "--finetune-train", "none",
              "--set", "train.max_steps=2", "--set", "train.eval_every=2", "--set", "optim.warmup_steps=1"]
    assert train_main([*common, "--out", str(tmp_path / "kept")]) == 0
    saved = load_model_folder(tmp_path / "kept" / "model")
    assert saved.cfg.train.max_steps == 2 and saved.cfg.model.vocab_size == saved.tokenizer.vocab_size
    assert train_main([*common, "--set", "train.save_model=false", "--out", str(tmp_path / "skipped")]) == 0
    assert (tmp_path / "skipped" / "metrics.json").is_file() and not (tmp_path / "skipped" / "model").exists()


def test_pickled_weights_are_refused_without_being_unpickled(smoke_trainer, tmp_path):
    trainer = smoke_trainer()
    folder = save_model_folder(tmp_path / "model", trainer.model, trainer.cfg, trainer.tokenizer)
    marker = tmp_path / "ran"

    class Payload:  # unpickling this would create the marker file
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(Exception, match="not a safetensors file"):
        load_model_folder(folder)
    (folder / "model.safetensors").unlink()
    torch.save(trainer.model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(Exception, match="pickled weights"):
        load_model_folder(folder)
    assert not marker.exists()
