"""python -m benchmarks.search_efficiency [--steps 128] [--trials 7] [--seeds 3] [--slots 2] [--json]

How good an answer each search gets for its compute, on one small real objective: the lr × warmup question of
sweeps/lr_warmup.py on wikitext-2 (the shared test split: 54 articles train, 6 held out) with a byte-level BPE
of 1,024 tokens trained on it, a 2-layer, 64-wide GPT with context 64, batch 16, `--steps` steps.

First the full lr × warmup grid of sweeps/lr_warmup.py (3 × 3 = 9 trials, FIFO): the reference best. Then, each
over `--seeds` searcher seeds with `--trials` trials: Optuna TPE + ASHA (the default sweep), random + ASHA and
random + FIFO, over the same continuous space. For each: the training tokens spent (as a fraction of the
grid's), the best val_loss among the trials that completed their run (sweeps' rule for "best"), and its gap to
the grid's best, as means over the seeds. Targets: Optuna+ASHA within 3 % of the grid's best val_loss with at
most 40 % of its tokens, and at least as good as random+ASHA.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import ray

from benchmarks.common import emit, offline, shared_file, sweep_benchmark_parser
from benchmarks.sweep_results import SweepRun, run_sweep_captured
from sweeps.lr_warmup import space
from trainer.result_schema import best_of

MODEL = {"model.n_layers": 2, "model.d_model": 64, "model.n_heads": 4, "model.context_length": 64,
         "model.dropout": 0.0, "train.batch_size": 16, "train.eval_batches": 8}
METHODS = {"optuna_asha": ("optuna", "asha"), "random_asha": ("random", "asha"), "random_fifo": ("random", "fifo")}


def _sweep(work: Path, experiment: str, search: str, scheduler: str, seed: int, trials: int, steps: int,
           slots: int, echo: bool) -> SweepRun:
    uri = f"sqlite:///{work / 'mlflow.db'}"
    sets = {**MODEL, "train.max_steps": steps, "train.eval_every": max(1, steps // 8)}
    argv = ["--preset", "smoke", "--data", str(shared_file("wikitext-2", "wiki.test.raw")), "--tokenizer", "bpe:1024",
            "--finetune-train", "none", "--search", search, "--scheduler", scheduler, "--seed", str(seed),
            "--num-samples", str(trials), "--max-concurrent", str(slots), "--cpus-per-trial", "1", "--storage", str(work / "ray_results"),
            "--mlflow-uri", uri, "--experiment", experiment, *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]
    run = run_sweep_captured("search_efficiency", space, argv, uri, experiment,
                             tokens_per_step=MODEL["train.batch_size"] * MODEL["model.context_length"], echo=echo)
    if run.rc or not run.trials:
        raise SystemExit(f"sweep {experiment} failed (exit code {run.rc}):\n{run.output[-2000:]}")
    return run


def best_completed(run: SweepRun) -> float:
    """The final val_loss of the sweep's best trial (trainer.result_schema.best_of: pruned ones never count)."""
    best = best_of(run.trials, lambda t: t.outcome, lambda t: t.val_ppl)
    return best.val_loss[max(best.val_loss)] if best is not None else float("inf")


def measure(steps: int = 128, trials: int = 7, seeds: int = 3, slots: int = 2, echo: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix="search_efficiency_"))
    offline(work / "cache")
    grid = _sweep(work, "grid", "grid", "fifo", 0, 1, steps, slots, echo)
    grid_steps, grid_best = sum(t.steps for t in grid.trials), best_completed(grid)
    results = {}
    for name, (search, scheduler) in METHODS.items():
        runs = [_sweep(work, f"{name}_{s}", search, scheduler, s, trials, steps, slots, echo) for s in range(seeds)]
        bests = [best_completed(r) for r in runs]
        fractions = [sum(t.steps for t in r.trials) / grid_steps for r in runs]
        results[name] = {"tokens_fraction": round(statistics.fmean(fractions), 3),
                         "best_val_loss": round(statistics.fmean(bests), 4),
                         "gap_to_grid": round(statistics.fmean(bests) / grid_best - 1, 4),
                         "best_val_loss_per_seed": [round(b, 4) for b in bests]}
    ray.shutdown()
    tpe, random_asha = results["optuna_asha"], results["random_asha"]
    return {"grid_trials": len(grid.trials), "grid_best_val_loss": round(grid_best, 4),
            "grid_tokens": grid_steps * MODEL["train.batch_size"] * MODEL["model.context_length"],
            "trials_per_search": trials, "seeds": seeds, "max_steps": steps, **results,
            "targets_met": {"optuna_asha_within_3pct": tpe["gap_to_grid"] <= 0.03,
                            "optuna_asha_at_most_40pct_tokens": tpe["tokens_fraction"] <= 0.40,
                            "optuna_asha_at_least_random_asha": tpe["best_val_loss"] <= random_asha["best_val_loss"]},
            "config": f"smoke preset + {MODEL}, train.max_steps={steps}, wikitext-2 test split, bpe:1024, "
                      f"space of sweeps/lr_warmup.py, {slots} trials at a time"}


def main(argv: list[str] | None = None) -> dict:
    parser = sweep_benchmark_parser("python -m benchmarks.search_efficiency")
    parser.add_argument("--steps", type=int, default=128, help="full budget per trial (train.max_steps)")
    parser.add_argument("--trials", type=int, default=7, help="trials per searched sweep")
    parser.add_argument("--seeds", type=int, default=3, help="searcher seeds per method")
    args = parser.parse_args(argv)
    return emit(measure(args.steps, args.trials, args.seeds, args.slots, echo=not args.json), args.json)


if __name__ == "__main__":
    main()
