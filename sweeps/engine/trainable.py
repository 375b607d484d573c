"""The Ray Tune function trainable: pre-train → report every eval (with a checkpoint) → fine-tune → report.
Between evals it reports cheap progress (step, train_loss, tokens_per_s) every ~10 s, without a checkpoint.
A trial that completes its run puts its model folder (trainer/model_folder.py) in its last checkpoint, as `model/`:
the checkpoint reaches the sweep's storage on any node, and the driver logs the folder to the trial's MLflow run.

    python sweeps/lr_warmup.py            (runs this in every trial)

The driver tokenizes once and hands the arrays to every trial through `tune.with_parameters` (Ray's object
store: numpy arrays arrive zero-copy), so a trial never tokenizes. The trial's config is a flattened RunConfig
(dotted keys: the base config with the searched values put in); `config_from_params` rebuilds it.
"""
from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from trainer.config import config_from_params
from trainer.data import Corpus, FinetuneData
from trainer.finetune import finetune_metrics
from trainer.loop import EvalRecord, Pretrainer
from trainer.model_folder import MODEL_DIR, save_model_folder
from trainer.tokenizer import TextTokenizer

CHECKPOINT_FILE = "state.pt"
# Seconds between progress reports; the environment variable exists so that tests of seconds-long trials get some.
PROGRESS_EVERY_S = float(os.environ.get("GPTSWEEP_PROGRESS_EVERY_S", "10"))


def save_checkpoint(trainer: Pretrainer, folder: Path) -> None:
    """torch.save to a temporary name, flush it to disk, then rename: a checkpoint folder never holds a
    half-written state.pt (a crash leaves at most a .partial file, which load_checkpoint never reads)."""
    partial = folder / (CHECKPOINT_FILE + ".partial")
    with open(partial, "wb") as f:
        torch.save(trainer.state_dict(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, folder / CHECKPOINT_FILE)


def load_state(folder: Path) -> dict:
    """The state saved in a checkpoint folder, on the CPU (Pretrainer.load_state_dict moves it to the run's device:
    mapped to a GPU, the RNG states would be refused by their setters). Only tensors and plain data are unpickled
    (`weights_only=True`): a --storage folder on shared disk must not be a way to run code. A missing, unreadable
    or foreign state.pt raises a one-line RuntimeError naming it."""
    path = Path(folder) / CHECKPOINT_FILE
    fix = "this trial cannot continue from it: put back an intact copy, or run the sweep again without --resume"
    if not path.is_file():
        leftover = " (only an unfinished state.pt.partial, which is never loaded)" if path.with_name(
            CHECKPOINT_FILE + ".partial").exists() else ""
        raise RuntimeError(f"checkpoint {path} is missing{leftover}; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one (in one line), not "unpickling error"
        # weights_only refuses any other object by its global (torch's message is a paragraph; this is its point)
        refused = re.search(r"GLOBAL (\S+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
        if refused:
            raise RuntimeError(f"refused checkpoint {path}: it holds more than tensors and plain data "
                               f"({refused[1]}), and unpickling that could run code; {fix}") from None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RuntimeError(f"corrupt checkpoint {path}: {type(error).__name__}: {first_line}; {fix}") from error


def load_checkpoint(trainer: Pretrainer, checkpoint: tune.Checkpoint) -> None:
    with checkpoint.as_directory() as folder:
        state = load_state(Path(folder))
    trainer.load_state_dict(state)


def train_gpt(params: dict, corpus: Corpus, tokenizer: TextTokenizer, finetune_data: FinetuneData | None) -> None:
    """Tune entry point. Each report carries `step` (ASHA's time axis), `max_steps` (with step: the trial's
    outcome, trainer.result_schema.outcome_of), the metric names of trainer.result_schema, and `start_step`: the
    step this process began at (0, or the checkpoint's step after a restart or --resume)."""
    cfg = config_from_params(params)
    trainer = Pretrainer(cfg, corpus, tokenizer)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        load_checkpoint(trainer, checkpoint)
    start_step = trainer.step
    node_id = ray.get_runtime_context().get_node_id()  # which machine ran it, for tracking

    def report(record: EvalRecord) -> None:
        metrics = dict(record.metrics)
        completed = metrics["step"] >= cfg.train.max_steps and not metrics.get("diverged")
        if completed and finetune_data is not None:
            # Fine-tune inside the last report so ASHA (which stops a trial at max_t) never cuts it off.
            metrics.update(finetune_metrics(trainer.model, finetune_data, cfg.finetune, cfg.train.seed,
                                            trainer.autocast))
        metrics["samples"] = record.samples
        metrics["start_step"] = start_step
        metrics["max_steps"] = cfg.train.max_steps  # with step: completed or stopped early (trainer.result_schema)
        metrics["node_id"] = node_id
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(trainer, Path(folder))
            if completed and cfg.train.save_model:  # the driver logs it to MLflow from the checkpoint's copy
                save_model_folder(Path(folder) / MODEL_DIR, trainer.model, cfg, tokenizer)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    def report_progress(metrics: dict[str, float]) -> None:
        """Between evals, for the console: no checkpoint and no val_loss, so ASHA, the searcher and MLflow
        (which act on val_loss) skip it; the last eval's val_ppl/val_bpb ride along to keep the table full."""
        latest = trainer.history[-1] if trainer.history else {}
        tune.report({**metrics, **{k: latest[k] for k in ("val_ppl", "val_bpb") if k in latest},
                     "start_step": start_step, "max_steps": cfg.train.max_steps, "node_id": node_id})

    trainer.run(on_eval=report, on_progress=report_progress, progress_every_s=PROGRESS_EVERY_S)
