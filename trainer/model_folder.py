"""A trained model as a folder: weights (safetensors), the run's config and the tokenizer; saved and loaded.

    python -m trainer --preset cpu --out runs/single      (writes runs/single/model/)
    python -m trainer.generate runs/single/model --prompt "The history of"

The folder holds three files and nothing that unpickles:
- `model.safetensors`: every parameter of trainer.model.GPT in fp32 (the tied output layer is the token embedding,
  stored once as `tok_emb.weight`);
- `config.json`: the run's flattened config (trainer.config.flatten), from which the model is rebuilt;
- `tokenizer.json`: the tokenizer the model was trained with (for `bpe:N`, the one trained on the corpus).
Every completed trial of a sweep writes one and logs it to its MLflow run under `model/`; `--set
train.save_model=false` skips it.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trainer.config import ConfigError, RunConfig, config_from_params, flatten
from trainer.model import GPT
from trainer.tokenizer import TextTokenizer

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
MODEL_FILES = (WEIGHTS, CONFIG, TOKENIZER)
MODEL_DIR = "model"  # the folder's name under `python -m trainer --out DIR` and under a trial's MLflow artifacts
TIED = "lm_head.weight"  # the same tensor as tok_emb.weight: not stored twice
PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


@dataclass
class SavedModel:
    model: GPT  # in eval mode, on the CPU, fp32
    cfg: RunConfig
    tokenizer: TextTokenizer


def save_model_folder(folder: Path, model: GPT, cfg: RunConfig, tokenizer: TextTokenizer) -> Path:
    """Write the three files into `folder` (replaced if present) by way of a sibling folder and a rename, so that
    a crash leaves the old folder or none, never half of one. Returns the folder."""
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    weights = {name: tensor.detach().float().cpu().contiguous()
               for name, tensor in model.state_dict().items() if name != TIED}
    save_file(weights, str(partial / WEIGHTS), metadata={"format": "pt"})
    (partial / CONFIG).write_text(json.dumps(flatten(cfg), indent=2) + "\n")
    (partial / TOKENIZER).write_text(tokenizer.to_json())
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    return folder


def check_model_folder(folder: Path) -> None:
    """A ConfigError naming what is missing when `folder` is not a model folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"model folder {folder} does not exist; pass a folder written by a run "
                          f"(OUT/{MODEL_DIR} of python -m trainer --out OUT) or runs:/RUN_ID/{MODEL_DIR}")
    pickled = sorted(p.name for pattern in PICKLED for p in folder.glob(pattern))
    if not (folder / WEIGHTS).is_file() and pickled:
        raise ConfigError(f"{folder} holds pickled weights ({', '.join(pickled)}), not {WEIGHTS}; only safetensors "
                          "are loaded (unpickling can run code): save the weights with safetensors")
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"{folder} is not a model folder: it lacks {', '.join(missing)}; pass a folder holding "
                          f"{', '.join(MODEL_FILES)} (OUT/{MODEL_DIR} of python -m trainer --out OUT)")


def _read_config(path: Path) -> RunConfig:
    try:
        params = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not JSON ({error}); pass a model folder written by a run") from None
    if not isinstance(params, dict) or "model.d_model" not in params:
        hint = " (a Hugging Face folder: load it with transformers)" if isinstance(params, dict) and \
            "model_type" in params else ""
        raise ConfigError(f"{path} is not a gptsweep run config{hint}; pass a folder written by python -m trainer "
                          "or a sweep trial")
    try:  # loaded here, on the CPU, whatever device it was trained on
        return config_from_params({**params, "train.device": "cpu"})
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"{path} is not a safetensors file ({' '.join(str(error).split())}); the weights must "
                          "be saved with safetensors (pickled weights are never loaded)") from None


def load_model_folder(folder: Path) -> SavedModel:
    """The model, its config and tokenizer from a model folder; a ConfigError (one line) for anything amiss."""
    folder = Path(folder)
    check_model_folder(folder)
    cfg = _read_config(folder / CONFIG)
    try:
        tokenizer = TextTokenizer.from_json((folder / TOKENIZER).read_text(), cfg.data.tokenizer)
    except Exception as error:  # the Rust side raises a bare Exception for malformed files
        raise ConfigError(f"{folder / TOKENIZER} is not a tokenizer ({' '.join(str(error).split())}); pass a "
                          "model folder written by a run") from None
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"{folder / TOKENIZER} has {tokenizer.vocab_size} ids but the model only "
                          f"{cfg.model.vocab_size}; the folder mixes files of different runs")
    model = GPT(cfg.model)
    try:
        missing, unexpected = model.load_state_dict(_read_weights(folder / WEIGHTS), strict=False)
    except RuntimeError as error:  # a tensor of another shape
        reason = str(error).strip().splitlines()[-1].strip()
        raise ConfigError(f"{folder / WEIGHTS} does not fit {folder / CONFIG} ({reason}); the folder mixes files "
                          "of different runs") from None
    missing = [name for name in missing if name != TIED]
    if missing or unexpected:
        raise ConfigError(f"{folder / WEIGHTS} does not fit {folder / CONFIG}: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}; the folder mixes files of different runs")
    return SavedModel(model.eval(), cfg, tokenizer)
