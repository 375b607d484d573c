"""Classification fine-tuning of the pretrained GPT on AG News: full and few-shot accuracy, and the same recipe
from random weights (`scratch_metrics`), the baseline that says whether pretraining helped.

    python -m trainer --preset cpu --data wikitext-2 --finetune-train ag_news --out /tmp/run

Each setting starts from a fresh copy of the pretrained weights, fits a linear head (alone first, for
`finetune.probe_steps`, then with the whole network) on the last real token's hidden state or the mean of all of
them (`finetune.pooling`), and is scored on every row of the test table. Both settings follow one rule for how
long to train (`updates`): a table of any size gets at least `finetune.steps` optimizer steps and at least
`finetune.epochs` passes, so a few hundred rows are not fitted with a handful of updates and a large table is
still seen whole.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from trainer.config import FinetuneConfig, RunConfig
from trainer.data import FinetuneData, fewshot_indices
from trainer.loop import resolve_device, use_threads
from trainer.precision import autocast_context, resolve_precision
from trainer.model import GPT, GPTClassifier

# The head alone, on frozen features, learns at this multiple of finetune.lr: a linear layer on fixed inputs
# takes larger steps than a whole network can.
PROBE_LR_FACTOR = 5


def _batch(ids: np.ndarray, lengths: np.ndarray, rows: np.ndarray, device: torch.device):
    """Rows of the padded table, cut to the longest real sequence in the batch (most padding never runs)."""
    width = int(lengths[rows].max())
    return (torch.from_numpy(ids[rows, :width]).long().to(device),
            torch.from_numpy(lengths[rows]).long().to(device))


@torch.no_grad()
def accuracy(model: GPTClassifier, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray,
             autocast, batch_size: int = 256) -> float:
    model.eval()
    # Sorting by length keeps each batch's padding small; accuracy does not depend on the order.
    order = np.argsort(lengths, kind="stable")
    correct = 0
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        x, n = _batch(ids, lengths, rows, next(model.parameters()).device)
        with autocast():
            predicted = model(x, n).argmax(dim=-1).cpu().numpy()
        correct += int((predicted == labels[rows]).sum())
    return correct / len(labels)


def updates(n_rows: int, cfg: FinetuneConfig) -> int:
    """Optimizer steps for a table of n_rows: at least cfg.steps, and at least cfg.epochs passes over the rows.
    The same rule serves the full and the few-shot head: training no longer shrinks with the table (one pass over
    581 rows is 19 steps, too few to learn anything), and a large table is still seen cfg.epochs times."""
    steps_per_epoch = -(-n_rows // cfg.batch_size)
    return max(cfg.steps, math.ceil(cfg.epochs * steps_per_epoch))


def batches(rows: np.ndarray, n_steps: int, batch_size: int, seed: int):
    """n_steps batches of rows, pass after pass, each pass in a fresh random order (the last batch of a pass may be
    short, so every row is seen once per pass)."""
    rng = np.random.default_rng(seed)
    steps_per_epoch = -(-len(rows) // batch_size)
    done = 0
    while done < n_steps:
        for batch_rows in np.array_split(rng.permutation(rows), steps_per_epoch)[:n_steps - done]:
            yield batch_rows
            done += 1


def train_steps(model: GPTClassifier, parameters: list, lr: float, data: FinetuneData, step_rows, autocast) -> None:
    """AdamW on `parameters` over the given batches of rows, lr decaying linearly to zero (no warmup: the body is
    already trained, and the head starts at zero)."""
    step_rows = list(step_rows)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / len(step_rows))
    device = next(model.parameters()).device
    labels = torch.from_numpy(data.train_labels).long().to(device)
    model.train()
    for batch_rows in step_rows:
        x, n = _batch(data.train_ids, data.train_lengths, batch_rows, device)
        with autocast():
            logits = model(x, n)
        loss = F.cross_entropy(logits.float(), labels[batch_rows])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()


def finetune(pretrained: GPT, data: FinetuneData, rows: np.ndarray, cfg: FinetuneConfig, seed: int,
             autocast=contextlib.nullcontext) -> float:
    """Fine-tune a copy of `pretrained` on the given training rows; return test accuracy.

    First `cfg.probe_steps` steps train the head alone on the frozen body's features (at PROBE_LR_FACTOR × lr),
    then `updates(len(rows), cfg)` steps train everything. Starting the whole network from a fitted head rather
    than a random one keeps the first updates from scrambling what pretraining learned (linear probing then
    fine-tuning, Kumar et al. 2022; measured on 100 AG News rows in docs/results.md, "Fine-tuning")."""
    torch.manual_seed(seed)
    device = next(pretrained.parameters()).device
    num_classes = int(max(data.train_labels.max(), data.test_labels.max())) + 1
    model = GPTClassifier(copy.deepcopy(pretrained), num_classes, cfg.pooling).to(device)
    if cfg.probe_steps:
        model.gpt.requires_grad_(False)
        train_steps(model, list(model.head.parameters()), cfg.lr * PROBE_LR_FACTOR, data,
                    batches(rows, cfg.probe_steps, cfg.batch_size, seed + 1), autocast)
        model.gpt.requires_grad_(True)
    train_steps(model, list(model.parameters()), cfg.lr, data,
                batches(rows, updates(len(rows), cfg), cfg.batch_size, seed), autocast)
    return accuracy(model, data.test_ids, data.test_lengths, data.test_labels, autocast)


def finetune_metrics(pretrained: GPT, data: FinetuneData, cfg: FinetuneConfig, seed: int,
                     autocast=contextlib.nullcontext) -> dict[str, float]:
    """`finetune_acc` (every training row) and `finetune_acc_fewshot` (first fewshot_n rows, class-balanced)."""
    everything = np.arange(len(data.train_labels))
    few = fewshot_indices(data.train_labels, cfg.fewshot_n, seed)
    return {
        "finetune_acc": finetune(pretrained, data, everything, cfg, seed, autocast),
        "finetune_acc_fewshot": finetune(pretrained, data, few, cfg, seed, autocast),
    }


def scratch_metrics(cfg: RunConfig, vocab_size: int, data: FinetuneData) -> dict[str, float]:
    """`finetune_acc_scratch` and `finetune_acc_fewshot_scratch`: cfg's fine-tuning recipe on a GPT of cfg's shape
    that was never pretrained. Its weights are the ones a trial of cfg starts pretraining from (same seed, same
    init), so the difference to the trial's finetune_acc is what pretraining bought. It runs on the trials' threads
    (train.threads): torch's default, every core, is several times slower beside busy processes, and its score
    would depend on the thread count."""
    use_threads(cfg.train)
    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train)
    model = GPT(dataclasses.replace(cfg.model, vocab_size=vocab_size)).to(device)
    dtype = resolve_precision(cfg.train.precision, device)
    autocast = lambda: autocast_context(device, dtype)
    metrics = finetune_metrics(model, data, cfg.finetune, cfg.train.seed, autocast)
    return {f"{name}_scratch": value for name, value in metrics.items()}
