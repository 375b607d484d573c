"""Classification fine-tuning of the pretrained GPT on AG News: full and few-shot accuracy, and the same recipe
from random weights (`scratch_metrics`), the baseline that says whether pretraining helped.

    python -m trainer --preset cpu --data wikitext-2 --finetune-train ag_news --out /tmp/run

Each setting starts from a fresh copy of the pretrained weights, trains the whole network plus a linear head on the
pooled hidden states (finetune.pooling: the last real token's, or the mean of all), and is scored on every row of
the test table.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from trainer.config import FinetuneConfig, RunConfig
from trainer.data import FinetuneData, fewshot_indices
from trainer.loop import resolve_device
from trainer.precision import autocast_context, resolve_precision
from trainer.model import GPT, GPTClassifier


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


def finetune(pretrained: GPT, data: FinetuneData, rows: np.ndarray, epochs: int, cfg: FinetuneConfig,
             seed: int, autocast=contextlib.nullcontext) -> float:
    """Fine-tune a copy of `pretrained` on the given training rows; return test accuracy."""
    torch.manual_seed(seed)
    device = next(pretrained.parameters()).device
    num_classes = int(max(data.train_labels.max(), data.test_labels.max())) + 1
    model = GPTClassifier(copy.deepcopy(pretrained), num_classes, cfg.pooling).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    steps_per_epoch = -(-len(rows) // cfg.batch_size)
    # Linear decay to zero: the usual fine-tuning schedule, with no warmup since the body is already trained.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / max(1, epochs * steps_per_epoch))
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(data.train_labels).long().to(device)
    for _ in range(epochs):
        model.train()
        for batch_rows in np.array_split(rng.permutation(rows), steps_per_epoch):
            x, n = _batch(data.train_ids, data.train_lengths, batch_rows, device)
            with autocast():
                logits = model(x, n)
            loss = F.cross_entropy(logits.float(), labels[batch_rows])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
    return accuracy(model, data.test_ids, data.test_lengths, data.test_labels, autocast)


def finetune_metrics(pretrained: GPT, data: FinetuneData, cfg: FinetuneConfig, seed: int,
                     autocast=contextlib.nullcontext) -> dict[str, float]:
    """`finetune_acc` (every training row) and `finetune_acc_fewshot` (first fewshot_n rows, class-balanced)."""
    everything = np.arange(len(data.train_labels))
    few = fewshot_indices(data.train_labels, cfg.fewshot_n, seed)
    return {
        "finetune_acc": finetune(pretrained, data, everything, cfg.epochs, cfg, seed, autocast),
        "finetune_acc_fewshot": finetune(pretrained, data, few, cfg.fewshot_epochs, cfg, seed, autocast),
    }


def scratch_metrics(cfg: RunConfig, vocab_size: int, data: FinetuneData) -> dict[str, float]:
    """`finetune_acc_scratch` and `finetune_acc_fewshot_scratch`: cfg's fine-tuning recipe on a GPT of cfg's shape
    that was never pretrained. Its weights are the ones a trial of cfg starts pretraining from (same seed, same
    init), so the difference to the trial's finetune_acc is what pretraining bought."""
    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train)
    model = GPT(dataclasses.replace(cfg.model, vocab_size=vocab_size)).to(device)
    dtype = resolve_precision(cfg.train.precision, device)
    autocast = lambda: autocast_context(device, dtype)
    metrics = finetune_metrics(model, data, cfg.finetune, cfg.train.seed, autocast)
    return {f"{name}_scratch": value for name, value in metrics.items()}
