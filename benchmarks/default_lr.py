"""python -m benchmarks.default_lr --json [--seeds 3] [--slots 2] [--quick --data FILE]

Is the default sweep's answer worth acting on? `python sweeps/lr_warmup.py` recommends the lr of its best completed
trial. This benchmark runs that sweep (its preset, Optuna TPE + ASHA, its trial count) for `--seeds` searcher
seeds, without fine-tuning (which does not enter the ranking), and, as the reference, an lr grid at the preset's
own steps and warmup: a lattice a factor 2 apart around the preset's lr (runs of benchmarks.run_pool, `--slots` at
a time), extended past whichever edge holds the best until the best has a tried lr on either side.

Prints one JSON object: the grid's val_loss per lr, its best lr (`grid_best_lr`) and the parabola-refined one;
per seed the sweep's recommended lr, its val_loss, `log2_ratio` = log2(recommended / grid_best_lr) and
`val_loss_gap_to_grid` (its val_loss relative to the grid's best); the mean log2_ratio over seeds; and
`goal_met`: the geometric mean of the recommended lrs within a factor 2 of the grid's best (|mean log2_ratio| ≤ 1).
The default run (cpu preset, 3 seeds) needs about 40 minutes of 2 idle cores.
"""
from __future__ import annotations

import argparse
import functools
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray

from analysis import transfer_fit
from benchmarks.common import emit, offline
from benchmarks.learning import machine
from benchmarks.run_pool import prepare, run_adaptively, train_run
from benchmarks.sweep_results import run_sweep_captured
from sweeps.lr_warmup import space
from trainer.config import build_config
from trainer.result_schema import COMPLETED, best_of


@dataclass(frozen=True)
class Setup:
    preset: str = "cpu"
    data: str | None = None  # None: the preset's corpus (the shared WikiText-2 split)
    tokenizer: str | None = None
    seeds: int = 3
    slots: int = 2
    max_lrs: int = 7  # a grid still at an edge after this many lrs stops there (grid_at_edge says so)

    def data_overrides(self) -> dict[str, object]:
        chosen = {"data.source": self.data, "data.tokenizer": self.tokenizer}
        return {"data.finetune_train": None, **{k: v for k, v in chosen.items() if v is not None}}

    def grid_run(self, lr: float) -> dict[str, object]:
        """The preset's own run (steps, warmup, eval cadence) at this lr, on one thread."""
        return {**self.data_overrides(), "optim.lr": lr, "train.threads": 1}

    def preset_lr(self) -> float:
        return build_config(self.preset, self.data_overrides()).optim.lr


def grid_planner(setup: Setup):
    """run_pool's plan for the lr line: lattice point k is preset_lr × 2^k; start at k = -1..2, then one
    past the edge holding the best (a diverged run counts as worse) until the best is bracketed. It opens with
    k = -1..2: four runs fill two slots twice, and the sweep's range (lr/3 to 3 lr) is covered."""
    center = setup.preset_lr()

    def plan(results: dict, running: set) -> dict:
        if running:
            return {}
        if not results:
            return {center * 2.0 ** k: setup.grid_run(center * 2.0 ** k) for k in (-1, 0, 1, 2)}
        optimum = grid_optimum(results)
        if len(results) >= setup.max_lrs or (optimum is not None and not optimum.at_edge):
            return {}
        lrs = sorted(results)
        lr = lrs[0] / 2 if optimum is None or math.isclose(optimum.opt_lr, lrs[0]) else lrs[-1] * 2
        return {lr: setup.grid_run(lr)}
    return plan


def grid_optimum(results: dict):
    """transfer_fit.optimal_lrs's row (opt_lr, opt_lr_refined, best_val_loss, at_edge) for the grid, or None
    when every run diverged."""
    table = pd.DataFrame([{"parametrization": "sp", "width": 0, "lr": lr, "val_loss": r["val_loss"]}
                          for lr, r in results.items()], columns=transfer_fit.COLUMNS)
    optima = transfer_fit.optimal_lrs(table)
    return None if optima.empty else optima.iloc[0]


def recommended(setup: Setup, work: Path, seed: int) -> dict:
    """One default sweep (no fine-tuning) with searcher seed `seed`: its best completed trial's lr and val_loss."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    experiment = f"lr_warmup_seed{seed}"
    data = [a for flag, v in (("--data", setup.data), ("--tokenizer", setup.tokenizer)) if v for a in (flag, v)]
    argv = ["--preset", setup.preset, *data, "--finetune-train", "none", "--search", "optuna", "--seed", str(seed),
            "--max-concurrent", str(setup.slots), "--cpus-per-trial", "1", "--storage", str(work / "ray_results"),
            "--mlflow-uri", uri, "--experiment", experiment]
    cfg = build_config(setup.preset, setup.data_overrides())
    run = run_sweep_captured("lr_warmup", space, argv, uri, experiment,
                             tokens_per_step=cfg.train.batch_size * cfg.model.context_length, echo=False)
    best = best_of(run.trials, lambda t: t.outcome, lambda t: t.val_ppl)
    if run.rc or best is None:
        raise SystemExit(f"sweep {experiment} found no completed trial (exit code {run.rc}):\n{run.output[-2000:]}")
    return {"seed": seed, "lr": float(best.config["optim.lr"]), "warmup_steps": int(best.config["optim.warmup_steps"]),
            "val_loss": round(best.val_loss[max(best.val_loss)], 4),
            "completed": sum(t.outcome == COMPLETED for t in run.trials), "trials": len(run.trials),
            "wall_s": round(run.wall_s)}


def measure(setup: Setup = Setup()) -> dict:
    offline()
    started = time.perf_counter()
    prepare(setup.grid_run(setup.preset_lr()), setup.preset)  # tokenize once, before the workers start
    grid = run_adaptively(grid_planner(setup), setup.slots, functools.partial(train_run, preset=setup.preset))
    optimum = grid_optimum(grid)
    if optimum is None:
        raise SystemExit(f"every run of the lr grid diverged: {sorted(grid)}")
    with tempfile.TemporaryDirectory(prefix="default_lr_") as work:
        try:
            sweeps = [recommended(setup, Path(work), seed) for seed in range(setup.seeds)]
        finally:
            ray.shutdown()  # the sweeps ran in this process, and a Ray left running would outlive the benchmark
    for sweep in sweeps:
        sweep["log2_ratio"] = round(math.log2(sweep["lr"] / optimum.opt_lr), 3)
        # What acting on the answer costs: its val_loss against the grid's best (a flat optimum makes lrs far
        # apart equally good, and the sweep also searched the warmup).
        sweep["val_loss_gap_to_grid"] = round(sweep["val_loss"] / optimum.best_val_loss - 1, 4)
    mean_log2 = statistics.fmean(s["log2_ratio"] for s in sweeps)
    return {"grid_val_loss": {f"{lr:.4g}": None if math.isnan(r["val_loss"]) else round(r["val_loss"], 4)
                              for lr, r in sorted(grid.items())},
            "grid_best_lr": optimum.opt_lr, "grid_best_lr_refined": round(optimum.opt_lr_refined, 6),
            "grid_best_val_loss": round(optimum.best_val_loss, 4), "grid_at_edge": bool(optimum.at_edge),
            "sweeps": sweeps, "mean_log2_ratio": round(mean_log2, 3),
            "max_abs_log2_ratio": max(abs(s["log2_ratio"]) for s in sweeps),
            "goal_met": abs(mean_log2) <= 1 and not optimum.at_edge,
            "preset": setup.preset, "data": setup.data or "the preset's corpus", "slots": setup.slots,
            "wall_s": round(time.perf_counter() - started), **machine()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.default_lr", description=__doc__.splitlines()[2])
    parser.add_argument("--seeds", type=int, default=Setup.seeds, help="searcher seeds (one default sweep each)")
    parser.add_argument("--slots", type=int, default=Setup.slots, help="runs and trials at a time, one CPU each")
    parser.add_argument("--quick", action="store_true", help="the smoke preset (give it a small --data): seconds")
    parser.add_argument("--data", help="corpus (default: the preset's)")
    parser.add_argument("--tokenizer", help="tokenizer (default: the preset's)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    setup = Setup("smoke" if args.quick else "cpu", args.data, args.tokenizer, args.seeds, args.slots)
    return emit(measure(setup), args.json)


if __name__ == "__main__":
    main()
