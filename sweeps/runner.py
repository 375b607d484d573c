"""The shared sweep runner: flags, data preparation, Ray Tune (Optuna/grid/random + ASHA), MLflow tracking.

    python sweeps/lr_warmup.py --help

A sweep script declares a search space (a function of the base config) and calls `run_sweep`. Everything that
can be wrong with the input is checked before Ray starts, and nothing is written until it has been.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trainer.cli import (ArgumentParser, add_config_args, config_from_args, default_tracking_uri,
                         exits_cleanly_on_bad_input)
from trainer.config import ConfigError, RunConfig, config_from_params, gpu_count, parse_overrides

# Ray prints advice a sweep user cannot act on; these keep the console to the progress table.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table lets us choose its columns
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no tensorboardX warning; MLflow is the log
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "0")
# Progress reports between evals carry no val_loss (so that nothing ranks trials on them): Tune must accept them.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter: a Tune domain for optuna/random search and the values for grid search."""
    domain: object
    grid: tuple


@dataclass(frozen=True)
class SweepBudget:
    """Sweep-level defaults of a preset (trial-level ones live in trainer.config.PRESETS)."""
    num_samples: int
    max_failures: int  # restarts of a crashed trial from its last checkpoint
    gpus_per_trial: float  # fraction of a GPU per trial where GPUs exist: several small trials share one


BUDGETS = {
    "smoke": SweepBudget(num_samples=4, max_failures=1, gpus_per_trial=0.1),
    "cpu": SweepBudget(num_samples=6, max_failures=1, gpus_per_trial=0.25),
    "seed": SweepBudget(num_samples=16, max_failures=2, gpus_per_trial=0.25),
}
# ASHA never stops a trial before this share of its steps: the sweeps search warmups up to a quarter of the run,
# and a trial still warming up looks worse than it will end. On the lr × warmup grid (benchmarks/asha_savings.py)
# the best trial, lr 3e-3 with a 25 % warmup, trails until half the run: a grace of 4 steps cut it and missed the
# best val_ppl by 16 % (47 % of the grid's steps); a quarter of the run keeps it (67 % of the steps).
GRACE_FRACTION = 0.25
REDUCTION_FACTOR = 2  # ASHA keeps the top half of the trials at each rung


def grace_steps(max_steps: int) -> int:
    """ASHA's grace period for a run of max_steps: GRACE_FRACTION of it, at least one step."""
    return max(1, round(max_steps * GRACE_FRACTION))


SearchSpace = Callable[[RunConfig], dict[str, Dim]]


def parse_args(name: str, argv: list[str] | None, default_search: str) -> argparse.Namespace:
    parser = ArgumentParser(prog=f"python sweeps/{name}.py")
    add_config_args(parser, finetune_default="ag_news")
    parser.add_argument("--search", choices=("optuna", "grid", "random"), default=default_search)
    parser.add_argument("--scheduler", choices=("asha", "fifo"), default=None,
                        help="early stopping (default: asha, except fifo for grid so the table is complete)")
    parser.add_argument("--num-samples", type=int, default=None, help="trials (grid: repeats of the grid)")
    parser.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what fits)")
    parser.add_argument("--cpus-per-trial", type=float, default=None)
    parser.add_argument("--gpus-per-trial", type=str, default=None, help="a fraction lets trials share a GPU")
    parser.add_argument("--storage", default="ray_results", help="Tune results folder or URI")
    parser.add_argument("--mlflow-uri", default=None, help="default: sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--experiment", default=name, help="MLflow experiment and Tune run name prefix")
    parser.add_argument("--address", default=None, help="join a running Ray cluster (e.g. auto)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the latest sweep of this experiment (after Ctrl+C/SIGTERM or a crash)")
    parser.add_argument("--seed", type=int, default=0, help="searcher and training seed")
    return parser.parse_args(argv)


def trial_params(preset: str, cfg: RunConfig, args: argparse.Namespace, cpus_per_trial: float,
                 on_gpu: bool) -> dict[str, object]:
    """What every trial gets besides the searched values: the preset, data flags, --set values, seed, threads."""
    params: dict[str, object] = {"preset": preset, "data.source": cfg.data.source,
                                 "data.val_source": cfg.data.val_source, "data.tokenizer": cfg.data.tokenizer,
                                 "data.finetune_train": cfg.data.finetune_train,
                                 "data.finetune_test": cfg.data.finetune_test, "train.seed": args.seed}
    params.update(parse_overrides(args.overrides))
    if not on_gpu:  # one torch thread per reserved core, or concurrent trials fight over the cores
        params["train.threads"] = max(1, int(cpus_per_trial))
    return params


def check_space(fixed: dict, dims: dict[str, Dim]) -> None:
    """Build the config at every grid corner now, so a bad range fails before Ray starts."""
    import itertools

    for corner in itertools.product(*(d.grid for d in dims.values())):
        config_from_params({**fixed, **dict(zip(dims, corner))})


def resources(args: argparse.Namespace, budget: SweepBudget, gpus_available: int) -> tuple[float, float, int]:
    """(cpus per trial, gpus per trial, concurrent trials) from the flags, the preset and the hardware."""
    try:
        gpus = float(args.gpus_per_trial) if args.gpus_per_trial is not None else (
            budget.gpus_per_trial if gpus_available else 0.0)
    except ValueError:
        gpus = math.nan
    if not math.isfinite(gpus) or gpus < 0:
        raise ConfigError(f"--gpus-per-trial {args.gpus_per_trial!r} is not a number ≥ 0; use e.g. 0.25 or 1, "
                          "or 0 for CPU")
    if gpus > gpus_available and args.address is None:
        raise ConfigError(f"--gpus-per-trial {gpus:g} but this machine has {gpus_available} GPU(s); "
                          "use a value ≤ the GPU count (fractions share a GPU), or 0 for CPU")
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else 1.0
    if not (0 < cpus < math.inf) or (cpus > os.cpu_count() and args.address is None):
        raise ConfigError(f"--cpus-per-trial {cpus:g} must be > 0 and at most this machine's {os.cpu_count()} "
                          "cores; use e.g. --cpus-per-trial 1")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent {args.max_concurrent} must be at least 1 (or left out: what fits)")
    slots = int(gpus_available / gpus) if gpus else int(os.cpu_count() // cpus)
    return cpus, gpus, max(1, args.max_concurrent or slots)


def latest_sweep(storage: Path, experiment: str) -> Path:
    from ray import tune

    candidates = sorted(p for p in storage.glob(f"{experiment}_*") if tune.Tuner.can_restore(str(p)))
    if not candidates:
        raise ConfigError(f"--resume: no sweep of experiment '{experiment}' in {storage}; "
                          "check --storage and --experiment, or drop --resume to start one")
    return candidates[-1]


@dataclass
class SweepPlan:
    """Everything a sweep needs, validated: the input to sweeps.launch.launch."""
    experiment: str
    cfg: RunConfig
    search: str
    scheduler: str
    num_samples: int
    dims: dict[str, Dim]
    fixed: dict[str, object]  # every trial's non-searched params (dotted keys + "preset")
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int
    grace_steps: int
    max_failures: int
    storage: str
    tracking_uri: str
    address: str | None
    seed: int
    resume_path: Path | None
    resume_command: str  # what to type to continue this sweep after an interrupt


def resume_command(name: str, argv: list[str] | None) -> str:
    """The command line that continues this sweep: the same flags plus --resume, run from the same folder
    (relative --storage, --mlflow-uri and data paths mean the same thing there)."""
    script = sys.argv[0] if argv is None and Path(sys.argv[0]).name == f"{name}.py" else f"sweeps/{name}.py"
    flags = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]
    python = shutil.which("python")
    same = python is not None and os.path.realpath(python) == os.path.realpath(sys.executable)
    line = shlex.join(["python" if same else sys.executable, script, *flags, "--resume"])
    return f"cd {shlex.quote(os.getcwd())} && {line}"


def make_plan(name: str, space: SearchSpace, argv: list[str] | None, default_search: str) -> SweepPlan:
    """Parse and check everything (raising ConfigError) without starting Ray or writing a file."""
    args = parse_args(name, argv, default_search)
    preset, cfg = config_from_args(args)
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"--num-samples {args.num_samples} must be at least 1")
    budget = BUDGETS[preset]
    # Defaults follow this machine's GPUs; on a cluster (--address) the driver is usually one of its nodes,
    # and launch checks an explicit --gpus-per-trial against the whole cluster once connected.
    cpus, gpus, concurrent = resources(args, budget, gpu_count())
    fixed = trial_params(preset, cfg, args, cpus, on_gpu=gpus > 0)
    dims = space(cfg)
    check_space(fixed, dims)
    storage = args.storage if "://" in args.storage else str(Path(args.storage).resolve())
    return SweepPlan(
        experiment=args.experiment, cfg=cfg, search=args.search,
        scheduler=args.scheduler or ("fifo" if args.search == "grid" else "asha"),
        num_samples=args.num_samples or (1 if args.search == "grid" else budget.num_samples),
        dims=dims, fixed=fixed, cpus_per_trial=cpus, gpus_per_trial=gpus, max_concurrent=concurrent,
        grace_steps=grace_steps(cfg.train.max_steps), max_failures=budget.max_failures,
        storage=storage, tracking_uri=args.mlflow_uri or default_tracking_uri(), address=args.address,
        seed=args.seed, resume_path=latest_sweep(Path(storage), args.experiment) if args.resume else None,
        resume_command=resume_command(name, argv))


@exits_cleanly_on_bad_input
def run_sweep(name: str, space: SearchSpace, argv: list[str] | None = None, default_search: str = "optuna") -> int:
    """Entry point of every sweep script: plan (exit 2 on bad input), then launch Ray Tune.

    Exit codes: 0 done (trials that diverged or errored are results, not failures), 2 bad input,
    130 / 143 interrupted by SIGINT (Ctrl+C) / SIGTERM: the state is saved and the resume command printed."""
    plan = make_plan(name, space, argv, default_search)
    from sweeps.launch import launch

    return launch(plan)
