"""pytest tests/trainer/test_config.py — the presets as README lists them (trainer/config.py): `seed` is the seed's
config and the default with CUDA, `cpu` the default without it, with its measured values; the cpu preset trains.
"""
from __future__ import annotations

import math

import pytest

from trainer import config
from trainer.config import RunConfig, build_config, flatten, with_vocab_size
from trainer.data import prepare_corpus
from trainer.loop import Pretrainer

# README: "the seed's config exactly: 4 layers, d_model 256, 8 heads, context 128, batch 16, 2000 steps, warmup 200,
# lr 3e-4 → 3e-5, weight decay 0.1, betas (0.9, 0.95), dropout 0.1, clip 1.0", GPT-2's tokenizer.
SEED = {"model.n_layers": 4, "model.d_model": 256, "model.n_heads": 8, "model.context_length": 128,
        "train.batch_size": 16, "train.max_steps": 2000, "optim.warmup_steps": 200, "optim.lr": 3e-4,
        "optim.min_lr_ratio": 0.1, "optim.weight_decay": 0.1, "optim.betas": (0.9, 0.95), "model.dropout": 0.1,
        "optim.grad_clip": 1.0, "data.tokenizer": "gpt2", "model.vocab_size": 50257, "model.parametrization": "sp"}
CPU = {"data.tokenizer": "bpe:4096", "model.n_layers": 2, "model.n_heads": 4, "model.d_model": 128,
       "model.context_length": 128, "model.dropout": 0.0, "optim.lr": 3e-3, "optim.warmup_steps": 180,
       "train.batch_size": 8, "train.max_steps": 1800, "train.eval_every": 450, "train.eval_batches": 40,
       "finetune.lr": 2e-3, "finetune.epochs": 2, "finetune.steps": 300, "finetune.probe_steps": 200,
       "finetune.max_length": 64, "finetune.pooling": "mean"}


def test_the_seed_preset_is_the_seeds_config_and_the_dataclass_defaults():
    seed = flatten(build_config("seed"))
    assert {k: seed[k] for k in SEED} == SEED
    assert seed == flatten(RunConfig())


def test_the_cpu_preset_keeps_its_measured_values():
    cpu = flatten(build_config("cpu"))
    assert {k: cpu[k] for k in CPU} == CPU
    untouched = {k for k in cpu if k not in CPU}  # everything else is the seed's
    assert {k: cpu[k] for k in untouched} == {k: v for k, v in flatten(RunConfig()).items() if k in untouched}


@pytest.mark.parametrize("gpus, preset", [(1, "seed"), (0, "cpu")])
def test_seed_is_the_default_with_cuda_and_cpu_without(monkeypatch, gpus, preset):
    monkeypatch.setattr(config, "gpu_count", lambda: gpus)
    assert config.default_preset() == preset


def test_the_cpu_preset_trains(tiny_corpus):
    # The preset's model, optimizer and batch; a few steps with a small BPE on the tiny corpus.
    cfg = build_config("cpu", {"data.source": str(tiny_corpus), "data.tokenizer": "bpe:300",
                               "train.max_steps": 4, "train.eval_every": 4, "train.eval_batches": 1,
                               "optim.warmup_steps": 1})
    corpus, tokenizer = prepare_corpus(cfg.data, cfg.model.context_length)
    trainer = Pretrainer(with_vocab_size(cfg, corpus.vocab_size), corpus, tokenizer)
    untrained = trainer.evaluate()["val_loss"]
    record = trainer.run()
    assert record.metrics["step"] == 4 and not record.metrics["diverged"]
    assert math.isfinite(record.metrics["val_loss"]) and record.metrics["val_loss"] < untrained
    assert len(trainer.model.blocks) == 2 and trainer.model.cfg.d_model == 128
