"""python -m benchmarks.mup_transfer --json [--data gutenberg] [--widths 32,64,128,256] [--steps 2000] [--slots 2] [--figure F.png] [--quick]

Does the optimal learning rate stay put across width under μP, and drift under SP? Every (parametrization, width,
lr) is one pre-training run of `--steps` steps on the same batches (same seed) of a corpus that never repeats
within a run (default: the Project Gutenberg books of GPTSWEEP_DATA_DIR, a BPE trained on them, the last 10 % of
the books held out whole for validation), trained directly with trainer.loop.Pretrainer (no Ray), `--slots`
processes of one thread at a time. Learning rates lie on one lattice a factor 2 apart; each (parametrization,
width) line starts at three lrs around a guess and extends itself one lr at a time past whichever edge holds its
best, until its optimum has a tried lr on either side; then the widest model is also trained at the narrowest
one's optimum (`transfer_gap`). Prints one JSON object: the optimal lr per width per parametrization,
`drift_log2` (|log2(opt lr at the widest / at the narrowest)|), `spread_log2` (log2 of the largest over the
smallest optimum across all widths), `transfer_gap` (the widest model's val_loss at the narrowest one's optimal lr,
relative to its best), `data`, `epochs_max` (the largest share of the training split a run saw) and `steps_min`.
Goal (`goal_met`): μP's spread ≤ 1 grid step and below SP's, μP transfer_gap ≤ 0.01.
The full run needs about an hour of 2 idle cores: run it under `flock /tmp/gptsweep-cpu.lock`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass

import pandas as pd

from analysis import figures, transfer_fit
from benchmarks.run_pool import prepare, run_adaptively, train_run
from trainer.cli import exits_cleanly_on_bad_input
from trainer.config import ConfigError, build_config

PARAMS = ("sp", "mup")


@dataclass(frozen=True)
class Setup:
    data: str = "gutenberg"  # any --data: a folder of GPTSWEEP_DATA_DIR by name, a path, or a hub name
    tokenizer: str = "bpe:4096"
    widths: tuple[int, ...] = (32, 64, 128, 256)  # the narrowest is μP's base width
    steps: int = 2000
    batch_size: int = 8
    context: int = 64
    n_layers: int = 2
    n_heads: int = 2
    eval_batches: int = 40  # × 16 windows of `context` tokens, the same held-out windows for every run
    # The lattice is lr_center × 2^k; μP lines start at k = -1, 0, 1. Width 32 (the base, where μP is SP) at these
    # defaults, measured: val_loss 5.759, 5.722, 5.702, 5.837 at lr 4e-3, 8e-3, 1.6e-2, 3.2e-2.
    lr_center: float = 1.6e-2
    max_lrs: int = 8  # per line: a line still at an edge after this many stops there (at_grid_edge says so)
    slots: int = 2

    def overrides(self, param: str, width: int, k: int) -> dict[str, object]:
        """The run at lattice point k: the cpu preset with this depth, context and batch, no dropout (noise-free
        comparisons), a 10 % warmup + cosine, one eval at the end, fp32, one thread."""
        return {"data.source": self.data, "data.tokenizer": self.tokenizer,
                "data.finetune_train": None, "model.n_layers": self.n_layers, "model.n_heads": self.n_heads,
                "model.dropout": 0.0, "model.base_width": min(self.widths), "model.context_length": self.context,
                "finetune.max_length": self.context, "model.parametrization": param, "model.d_model": width,
                "optim.lr": self.lr(k), "train.batch_size": self.batch_size, "train.max_steps": self.steps,
                "optim.warmup_steps": max(1, self.steps // 10), "train.eval_every": self.steps,
                "train.eval_batches": self.eval_batches, "train.threads": 1, "train.precision": "fp32"}

    def lr(self, k: int) -> float:
        return self.lr_center * 2.0 ** k

    def first_k(self, param: str, width: int) -> int:
        """Where a line starts: μP at the centre; SP a step lower per 4× of width (its optimum falls with width,
        hidden matrices ∝ 1/width but embeddings not, so by less than μP's 1/width)."""
        return 0 if param == "mup" else -round(math.log2(width / min(self.widths)) / 2)


QUICK = Setup(widths=(16, 32), steps=24, batch_size=4, context=16, eval_batches=2, n_heads=2, max_lrs=5)


def _line_table(results: dict, param: str, width: int) -> pd.DataFrame:
    rows = [{"parametrization": p, "width": w, "lr": lr, "val_loss": r["val_loss"]}
            for (p, w, lr), r in results.items() if (p, w) == (param, width)]
    return pd.DataFrame(rows, columns=transfer_fit.COLUMNS)


def next_k(setup: Setup, results: dict, param: str, width: int, tried: list[int]) -> int | None:
    """The line's next lattice point once its opening three are done: one past the edge holding its best (the
    lowest finite val_loss; a diverged run counts as worse), None once the best has a tried lr on either side."""
    if len(tried) >= setup.max_lrs:
        return None
    optima = transfer_fit.optimal_lrs(_line_table(results, param, width))
    if optima.empty:  # everything diverged: go lower
        return min(tried) - 1
    best = optima.iloc[0]
    if not best.at_edge:
        return None
    return min(tried) - 1 if math.isclose(best.opt_lr, setup.lr(min(tried))) else max(tried) + 1


def planner(setup: Setup):
    """The search as run_pool's plan; keys are (parametrization, width, lr)."""
    def plan(results: dict, running: set) -> dict:
        wanted = {}
        for param in PARAMS:
            settled = True
            for width in sorted(setup.widths, reverse=True):  # dearest first, so the slots finish together
                tried = [k for k in range(-40, 41) if (param, width, setup.lr(k)) in results]
                if any(key[:2] == (param, width) for key in running):
                    settled = False
                    continue
                start = setup.first_k(param, width)
                ks = [start, start - 1, start + 1] if not tried else [next_k(setup, results, param, width, tried)]
                ks = [k for k in ks if k is not None]
                wanted.update({(param, width, setup.lr(k)): setup.overrides(param, width, k) for k in ks})
                settled = settled and not ks
            if settled:
                wanted.update(transfer_run(setup, results, running, param))
        return wanted
    return plan


def transfer_run(setup: Setup, results: dict, running: set, param: str) -> dict:
    """The widest model at the narrowest one's optimal lr, when its line lacks that lr."""
    narrow, wide = min(setup.widths), max(setup.widths)
    optima = transfer_fit.optimal_lrs(_line_table(results, param, narrow))
    if optima.empty:
        return {}
    k = round(math.log2(optima.iloc[0].opt_lr / setup.lr_center))
    key = (param, wide, setup.lr(k))
    return {} if key in results or key in running else {key: setup.overrides(param, wide, k)}


def summarize(setup: Setup, results: dict, epoch_tokens: int) -> tuple[dict, pd.DataFrame]:
    """The JSON summary and the transfer table (parametrization, width, lr, val_loss) of the finished search."""
    table = pd.DataFrame([{"parametrization": p, "width": w, "lr": lr, "val_loss": r["val_loss"]}
                          for (p, w, lr), r in sorted(results.items())], columns=transfer_fit.COLUMNS)
    optima = transfer_fit.optimal_lrs(table)
    by = lambda column: {p: {int(r.width): r[column] for _, r in optima[optima.parametrization == p].iterrows()}
                         for p in PARAMS}
    drift = {p: transfer_fit.drift_log2(optima, p) for p in PARAMS}
    lrs = {p: optima[optima.parametrization == p].opt_lr for p in PARAMS}
    spread = {p: math.log2(lrs[p].max() / lrs[p].min()) if len(lrs[p]) else math.nan for p in PARAMS}
    gap = {p: transfer_fit.transfer_gap(table, optima, p) for p in PARAMS}
    runs = list(results.values())
    return {
        "widths": list(setup.widths), "optimal_lr": by("opt_lr"), "optimal_lr_refined": by("opt_lr_refined"),
        "best_val_loss": by("best_val_loss"), "at_grid_edge": by("at_edge"), "drift_log2": drift,
        "spread_log2": spread, "transfer_gap": gap["mup"], "transfer_gap_sp": gap["sp"],
        "goal_met": bool(spread["mup"] <= 1 and spread["mup"] < spread["sp"] and gap["mup"] <= 0.01),
        "val_loss": {p: {int(w): {f"{lr:.4g}": None if math.isnan(v) else round(v, 4)
                                  for lr, v in zip(g.lr, g.val_loss)}
                         for w, g in table[table.parametrization == p].groupby("width")} for p in PARAMS},
        "data": f"{setup.data}, {setup.tokenizer}, {epoch_tokens:,} training tokens",
        "epochs_max": max(r["epochs"] for r in runs),
        "steps_min": int(min((r["steps"] for r in runs if not math.isnan(r["val_loss"])), default=0)),
        "runs": len(runs), "diverged": sum(math.isnan(r["val_loss"]) for r in runs), "tokens_per_run": setup.steps * setup.batch_size * setup.context,
        "setup": dataclasses.asdict(setup), "total_device_s": round(sum(r["device_s"] for r in runs), 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {setup.slots} runs at a time",
    }, table


def check(setup: Setup) -> None:
    """Every run's config builds (ConfigError naming the fix otherwise), before anything is tokenized or trained."""
    if len(set(setup.widths)) < 2:
        raise ConfigError(f"--widths {setup.widths} needs at least two widths to compare, e.g. --widths 32,256")
    for width in setup.widths:
        build_config("cpu", setup.overrides("mup", width, 0))


def measure(setup: Setup = Setup()) -> tuple[dict, pd.DataFrame]:
    check(setup)
    started = time.perf_counter()
    epoch_tokens, _ = prepare(setup.overrides("mup", min(setup.widths), 0))  # tokenize once, before the workers

    def progress(key, result):  # what is done, and what is left if a time limit cuts the run
        print(f"{key[0]} width {key[1]} lr {key[2]:.4g}: val_loss {result['val_loss']:.4f} "
              f"({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)

    results = run_adaptively(planner(setup), setup.slots, train_run, progress)
    summary, table = summarize(setup, results, epoch_tokens)
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    return summary, table


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


@exits_cleanly_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mup_transfer", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the summary, as one JSON object")
    parser.add_argument("--quick", action="store_true",
                        help="the same search on toy models (widths 16, 32; 24 steps of 4 × 16 tokens): seconds")
    parser.add_argument("--data", help=f"corpus (default {Setup.data})")
    parser.add_argument("--tokenizer", help=f"default {Setup.tokenizer}")
    parser.add_argument("--widths", type=_ints, help="d_model values, comma-separated; the narrowest is μP's base")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr-center", type=float, help="the lattice's lr at k = 0, where μP lines start")
    parser.add_argument("--slots", type=int, help="runs at a time, one torch thread each (default 2)")
    parser.add_argument("--figure", default=None, help="also write the transfer figure (PNG) here")
    args = parser.parse_args(argv)
    chosen = {k: v for k, v in vars(args).items() if k in Setup.__dataclass_fields__ and v is not None}
    summary, table = measure(dataclasses.replace(QUICK if args.quick else Setup(), **chosen))
    if args.figure:
        figures.save(transfer_fit.transfer_figure(table), args.figure)
    if not args.json:
        print(table.to_string(index=False))
    print(json.dumps(summary, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
