"""The Ray Tune function trainable: pre-train → report every eval (with a checkpoint) → fine-tune → report.

    python sweeps/lr_warmup.py            (runs this in every trial)

The driver tokenizes once and hands the arrays to every trial through `tune.with_parameters` (Ray's object
store: numpy arrays arrive zero-copy), so a trial never tokenizes. The trial's config holds dotted keys
(`optim.lr`, ...) over the sweep's base config.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from trainer.config import RunConfig, build_config
from trainer.data import Corpus, FinetuneData
from trainer.finetune import finetune_metrics
from trainer.loop import EvalRecord, Pretrainer
from trainer.tokenizer import TextTokenizer

CHECKPOINT_FILE = "state.pt"


def trial_config(params: dict[str, object]) -> RunConfig:
    """The RunConfig of one trial from its flat Tune config: {"preset": name, "optim.lr": ..., ...}."""
    params = dict(params)
    return build_config(str(params.pop("preset")), params)


def save_checkpoint(trainer: Pretrainer, folder: Path) -> None:
    """torch.save to a temporary name, then rename: a checkpoint folder never holds a half-written file."""
    partial = folder / (CHECKPOINT_FILE + ".partial")
    torch.save(trainer.state_dict(), partial)
    os.replace(partial, folder / CHECKPOINT_FILE)


def load_checkpoint(trainer: Pretrainer, checkpoint: tune.Checkpoint) -> None:
    with checkpoint.as_directory() as folder:
        path = Path(folder) / CHECKPOINT_FILE
        try:
            state = torch.load(path, map_location=trainer.device, weights_only=False)
        except Exception as error:  # a truncated or foreign file: say which one, not just "unpickling error"
            raise RuntimeError(f"corrupt checkpoint {path}: {error}; delete it to restart this trial") from error
    trainer.load_state_dict(state)


def train_gpt(params: dict, corpus: Corpus, tokenizer: TextTokenizer, finetune_data: FinetuneData | None) -> None:
    """Tune entry point. Each report carries `step` (ASHA's time axis) and the metric names of DESIGN.md."""
    cfg = trial_config(params)
    trainer = Pretrainer(cfg, corpus, tokenizer)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        load_checkpoint(trainer, checkpoint)

    def report(record: EvalRecord) -> None:
        metrics = dict(record.metrics)
        finished = metrics["step"] >= cfg.train.max_steps or metrics.get("diverged")
        if finished and finetune_data is not None and not metrics.get("diverged"):
            # Fine-tune inside the last report so ASHA (which stops a trial at max_t) never cuts it off.
            metrics.update(finetune_metrics(trainer.model, finetune_data, cfg.finetune, cfg.train.seed,
                                            trainer.autocast))
        metrics["samples"] = record.samples
        metrics["node_id"] = ray.get_runtime_context().get_node_id()  # which machine ran it, for tracking
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(trainer, Path(folder))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    trainer.run(on_eval=report)
