"""python -m benchmarks.mup_transfer --json [--widths 16,32,64,128] [--lrs ...] [--steps 200] [--figure docs/x.png]

Does the optimal learning rate stay put across width under μP, and drift under SP? Every (parametrization,
width, lr) is one pre-training run of `train.max_steps` steps on real WikiText-2 (GPTSWEEP_DATA_DIR) with a BPE
trained on the corpus, the same tokens for every run (same batches, same seed), trained directly with
trainer.loop.Pretrainer (no Ray). Prints one JSON object: the widths, the optimal lr per width per
parametrization, `drift_log2` (|log2(opt lr at the largest width / at the smallest)|) and `transfer_gap` (the
largest width's val_loss at the smallest width's optimal lr, relative to the best val_loss at the largest width).
Goal: μP drift ≤ 1 grid step and below SP's, μP transfer_gap ≤ 0.01. Run it under `flock /tmp/gptsweep-cpu.lock`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import pandas as pd

from analysis import figures
from analysis import transfer_fit as lr_transfer
from trainer.config import build_config
from trainer.data import prepare_corpus
from trainer.loop import Pretrainer

# Sized for ≤ 15 min on 2 shared CPU cores: 48 runs of 200 steps × 16 × 32 tokens, 2 layers, a 512-token BPE.
DEFAULT_WIDTHS = (16, 32, 64, 128)
DEFAULT_LRS = tuple(2e-3 * 2 ** k for k in range(6))  # 2e-3 … 6.4e-2, a factor 2 apart


def base_overrides(steps: int, tokenizer: str, n_layers: int, n_heads: int, base_width: int,
                   threads: int, context: int = 32) -> dict[str, object]:
    """The cpu preset with a tiny depth and context, a corpus BPE, no dropout (noise-free comparisons), one eval
    at the end."""
    return {"data.source": "wikitext-2", "data.tokenizer": tokenizer, "model.n_layers": n_layers,
            "model.n_heads": n_heads, "model.dropout": 0.0, "model.base_width": base_width,
            "model.context_length": context, "finetune.max_length": context,
            "train.max_steps": steps, "optim.warmup_steps": max(1, steps // 10), "train.eval_every": steps,
            "train.threads": threads, "train.precision": "fp32"}


def train_one(corpus, tokenizer, overrides: dict[str, object]) -> float:
    """The final val_loss of one run; NaN where it diverged."""
    trainer = Pretrainer(build_config("cpu", overrides), corpus, tokenizer)
    trainer.sample = lambda *a, **k: []  # samples are not measured here: skip their 96 generation steps per run
    metrics = trainer.run().metrics
    return math.nan if metrics.get("diverged") else float(metrics["val_loss"])


def measure(widths=DEFAULT_WIDTHS, lrs=DEFAULT_LRS, steps: int = 200, tokenizer: str = "bpe:512",
            n_layers: int = 2, n_heads: int = 2, base_width: int | None = None, threads: int = 2,
            params=("sp", "mup")) -> tuple[dict, pd.DataFrame]:
    """Train the grid; return the JSON summary and the transfer table (parametrization, width, lr, val_loss)."""
    base_width = base_width or min(widths)
    fixed = base_overrides(steps, tokenizer, n_layers, n_heads, base_width, threads)
    cfg = build_config("cpu", fixed)
    corpus, tok = prepare_corpus(cfg.data, cfg.model.context_length)
    started, rows, seconds = time.perf_counter(), [], {}
    for param in params:
        for width in widths:
            t0 = time.perf_counter()
            for lr in lrs:
                loss = train_one(corpus, tok, {**fixed, "model.parametrization": param, "model.d_model": width,
                                               "optim.lr": lr})
                rows.append({"parametrization": param, "width": width, "lr": lr, "val_loss": loss})
                print(f"{param} width {width} lr {lr:.3g}: val_loss {loss:.4f} ({time.perf_counter() - started:.0f}s)",
                      file=sys.stderr, flush=True)  # progress, and what is left if a time limit cuts the run
            seconds[f"{param}/{width}"] = round(time.perf_counter() - t0, 1)
    table = pd.DataFrame(rows, columns=lr_transfer.COLUMNS)
    optima = lr_transfer.optimal_lrs(table)
    by = lambda column: {p: {int(r.width): r[column] for _, r in optima[optima.parametrization == p].iterrows()}
                         for p in params}
    tokens = steps * cfg.train.batch_size * cfg.model.context_length
    summary = {
        "widths": list(widths), "lrs": list(lrs), "optimal_lr": by("opt_lr"), "optimal_lr_refined": by("opt_lr_refined"),
        "best_val_loss": by("best_val_loss"), "at_grid_edge": by("at_edge"),
        "drift_log2": {p: lr_transfer.drift_log2(optima, p) for p in params},
        "transfer_gap": lr_transfer.transfer_gap(table, optima, "mup") if "mup" in params else math.nan,
        "transfer_gap_sp": lr_transfer.transfer_gap(table, optima, "sp") if "sp" in params else math.nan,
        "val_loss": {p: {int(w): [None if math.isnan(v) else round(v, 4) for v in g.sort_values("lr").val_loss]
                         for w, g in table[table.parametrization == p].groupby("width")} for p in params},
        "setup": {"steps": steps, "tokens_per_run": tokens, "tokenizer": tokenizer, "vocab_size": corpus.vocab_size,
                  "n_layers": n_layers, "n_heads": n_heads, "base_width": base_width, "context": cfg.model.context_length,
                  "batch_size": cfg.train.batch_size, "warmup_steps": fixed["optim.warmup_steps"],
                  "weight_decay": cfg.optim.weight_decay, "threads": threads, "data": "wikitext-2 (GPTSWEEP_DATA_DIR)"},
        "seconds_per_width": seconds, "wall_s": round(time.perf_counter() - started, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    return summary, table


def _floats(text: str, kind=float) -> tuple:
    return tuple(kind(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mup_transfer", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--widths", type=lambda s: _floats(s, int), default=DEFAULT_WIDTHS)
    parser.add_argument("--lrs", type=_floats, default=DEFAULT_LRS)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tokenizer", default="bpe:512")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", default=None, help="also write the transfer figure (PNG) here")
    args = parser.parse_args(argv)
    summary, table = measure(args.widths, args.lrs, args.steps, args.tokenizer, args.layers, threads=args.threads)
    if args.figure:
        figures.save(lr_transfer.transfer_figure(table), args.figure)
    if args.json:
        print(json.dumps(summary))
    else:
        print(table.to_string(index=False))
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
