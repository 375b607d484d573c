"""A sweep's plan: the searched dimensions, the preset's sweep budget, resources, ASHA's constants, and
`make_plan`, which turns the flags into a validated `SweepPlan` without starting Ray or writing a file.

    python sweeps/lr_warmup.py --preset smoke --num-samples 2      (every sweep script plans, then launches)
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ray import tune

from sweeps.engine.flags import parse_args, resume_command
from sweeps.engine.preflight import check_resume_data, check_sweep_inputs
from trainer.cli import config_from_args, default_tracking_uri
from trainer.config import ConfigError, RunConfig, config_from_params, flatten, gpu_count


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter: a Tune domain for optuna/random search and the values for grid search."""
    domain: object
    grid: tuple


SearchSpace = Callable[[RunConfig], dict[str, Dim]]


# ASHA never stops a trial before this share of its steps: the sweeps search warmups up to a quarter of the run,
# and a trial still warming up looks worse than it will end. On the lr × warmup grid (benchmarks/asha_savings.py)
# the best trial, lr 3e-3 with a 25 % warmup, trails until half the run: a grace of 4 steps cut it and missed the
# best val_ppl by 16 % (47 % of the grid's steps); a quarter of the run keeps it (67 % of the steps).
GRACE_FRACTION = 0.25


@dataclass(frozen=True)
class SweepBudget:
    """Sweep-level defaults of a preset (trial-level ones live in trainer.config.PRESETS)."""
    num_samples: int
    max_failures: int  # restarts of a crashed trial from its last checkpoint
    gpus_per_trial: float  # fraction of a GPU per trial where GPUs exist: several small trials share one
    grace_fraction: float = GRACE_FRACTION  # ASHA judges no trial before this share of its run


# gpus_per_trial: guesses, not yet measured; `python -m benchmarks.gpu --json` on a GPU gives the seed config's
# (packing.recommended_gpus_per_trial: where total tokens/s stops growing by >= 10 % as trials are added).
BUDGETS = {
    "smoke": SweepBudget(num_samples=4, max_failures=1, gpus_per_trial=0.1),
    # 5 trials, judged once at half the run, where ASHA keeps each trial that beats the median so far (the first
    # to arrive always goes on): one cut, not one at a quarter and another at half the run (one measured
    # run finished 2 of 5; docs/results.md). Minutes per trial on a CPU.
    "cpu": SweepBudget(num_samples=5, max_failures=1, gpus_per_trial=0.25, grace_fraction=0.5),
    "seed": SweepBudget(num_samples=16, max_failures=2, gpus_per_trial=0.25),
}
REDUCTION_FACTOR = 2  # ASHA keeps the top half of the trials at each rung


def grace_steps(max_steps: int, fraction: float = GRACE_FRACTION) -> int:
    """ASHA's grace period for a run of max_steps: `fraction` of it, at least one step."""
    return max(1, round(max_steps * fraction))


@dataclass
class SweepPlan:
    """Everything a sweep needs, validated: the input to sweeps.engine.launch.launch."""
    experiment: str
    preset: str
    cfg: RunConfig  # the base config every trial starts from; trials override the searched keys
    search: str
    scheduler: str
    num_samples: int
    dims: dict[str, Dim]
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
    grow_to: int | None = None  # --resume --num-samples N: grow the finished sweep to N trials
    register: str | None = None  # --register NAME: the registered model the best trial's model becomes a version of

    @property
    def time_attr(self) -> str:
        """ASHA's time axis: training steps, or tokens seen when the space changes the tokens of a step (a
        trial of batch 32 has seen 4x the tokens of one of batch 8 at the same step)."""
        return "tokens" if TOKENS_PER_STEP_KEYS & set(self.dims) else "step"

    def asha_budget(self) -> tuple[int, int]:
        """(max_t, grace period) on the time axis: the most any trial can reach, and the grace share of the base
        config's run (in tokens: at its tokens per step)."""
        if self.time_attr == "step":
            return self.cfg.train.max_steps, self.grace_steps
        tokens_per_step = self.cfg.train.batch_size * self.cfg.model.context_length
        largest = {k: max(_values(self.dims.get(k), getattr(self.cfg.train if k.startswith("train") else
                                                                   self.cfg.model, k.split(".")[1])))
                   for k in TOKENS_PER_STEP_KEYS}
        max_t = self.cfg.train.max_steps * largest["train.batch_size"] * largest["model.context_length"]
        return max_t, self.grace_steps * tokens_per_step

    @property
    def searched(self) -> list[str]:
        return searched_keys(self.dims)

    @property
    def fixed(self) -> dict[str, object]:
        """Every trial's params before the searched values: the flattened base config."""
        return flatten(self.cfg)


def searched_keys(dims: dict[str, Dim]) -> list[str]:
    """The dotted keys a sweep varies, as MLflow logs them: a dim's own key, or the keys of its grid points where
    those are mappings of several keys (trainer.config.spread_params)."""
    keys: dict[str, None] = {}
    for key, dim in dims.items():
        keys.update(dict.fromkeys(k for point in dim.grid for k in (point if isinstance(point, dict) else [key])))
    return list(keys)


TOKENS_PER_STEP_KEYS = {"train.batch_size", "model.context_length"}


def _values(dim: Dim | None, base: int) -> list[int]:
    """Every value a searched integer can take (grid values, a choice's categories, a randint's bounds)."""
    if dim is None:
        return [base]
    domain = dim.domain
    extra = list(getattr(domain, "categories", None) or []) + [getattr(domain, "upper", base) - 1]
    return [base, *dim.grid, *(int(v) for v in extra)]


def check_space(cfg: RunConfig, dims: dict[str, Dim]) -> None:
    """Build the config at every grid corner now, so a bad range fails before Ray starts."""
    for corner in itertools.product(*(d.grid for d in dims.values())):
        config_from_params({**flatten(cfg), **dict(zip(dims, corner))})


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
    # A grown sweep's later parts (NAME_grow8, ...) sort after its first: the latest part is the one to resume.
    candidates = sorted(p for p in storage.glob(f"{experiment}_*") if tune.Tuner.can_restore(str(p)))
    if not candidates:
        raise ConfigError(f"--resume: no sweep of experiment '{experiment}' in {storage}; "
                          "check --storage and --experiment, or drop --resume to start one")
    return candidates[-1]


def make_plan(name: str, space: SearchSpace, argv: list[str] | None, default_search: str) -> SweepPlan:
    """Parse and check everything (raising ConfigError) without starting Ray or writing a file."""
    args = parse_args(name, argv, default_search)
    preset, cfg = config_from_args(args, defaults={"train.seed": args.seed})
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"--num-samples {args.num_samples} must be at least 1")
    budget = BUDGETS[preset]
    # Defaults follow this machine's GPUs; on a cluster (--address) the driver is usually one of its nodes,
    # and launch checks an explicit --gpus-per-trial against the whole cluster once connected.
    cpus, gpus, concurrent = resources(args, budget, gpu_count())
    if not gpus and cfg.train.device.startswith("cuda"):  # Ray would hand such a trial no GPU
        raise ConfigError(f"train.device={cfg.train.device} needs a GPU per trial, but --gpus-per-trial is 0; "
                          "give e.g. --gpus-per-trial 0.25, or --set train.device=auto")
    if gpus == 0:  # one torch thread per reserved core, or concurrent trials fight over the cores
        cfg.train.threads = max(1, int(cpus))
    if args.register is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.register):
        raise ConfigError(f"--register {args.register!r}: name the registered model with letters, digits, "
                          "'_', '-' and '.' only, e.g. --register lr_warmup_best")
    dims = space(cfg)
    check_space(cfg, dims)
    storage = args.storage if "://" in args.storage else str(Path(args.storage).resolve())
    tracking_uri = args.mlflow_uri or default_tracking_uri()
    check_sweep_inputs(args.experiment, args.seed, storage, tracking_uri, args.address)
    resume_path = latest_sweep(Path(storage), args.experiment) if args.resume else None
    if resume_path is not None:
        check_resume_data(resume_path, cfg)
    return SweepPlan(
        experiment=args.experiment, preset=preset, cfg=cfg, search=args.search,
        scheduler=args.scheduler or ("fifo" if args.search == "grid" else "asha"),
        num_samples=args.num_samples or (1 if args.search == "grid" else budget.num_samples),
        dims=dims, cpus_per_trial=cpus, gpus_per_trial=gpus, max_concurrent=concurrent,
        grace_steps=grace_steps(cfg.train.max_steps, budget.grace_fraction), max_failures=budget.max_failures,
        storage=storage, tracking_uri=tracking_uri, address=args.address,
        seed=args.seed, resume_path=resume_path,
        resume_command=resume_command(name, argv), grow_to=args.num_samples if args.resume else None,
        register=args.register)
