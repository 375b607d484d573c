"""What learning rate to use for a wider model, from an lr × width sweep (sweeps/lr_transfer.py) in MLflow.

    python -m analysis.transfer --experiment lr_transfer --width 1024 [--depth 4] [--mlflow-uri URI] [--run ID]

μP: the optimum does not move with width (that is what μP is for), so the recommendation is the sweep's optimum
in base-width units (the geometric mean over the swept widths of each width's parabola-refined optimum), with
model.parametrization=mup and the sweep's model.base_width. SP: a power law lr ∝ width^b fitted to the per-width
optima (least squares in log-log space), evaluated at the requested width, ×/÷ one standard error of that
prediction. The last line is a command to paste; bad input is one line and exit code 2.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys

import numpy as np

from analysis.transfer_fit import optimal_lrs, power_law, predict, transfer_table
from analysis.runs import changed_settings, fetch_sweep, sweep_preset
from trainer.cli import ArgumentParser, default_tracking_uri, exits_cleanly_on_bad_input
from trainer.config import ConfigError, build_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m analysis.transfer", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="MLflow experiment of an lr × width sweep")
    parser.add_argument("--width", type=int, required=True, help="d_model of the model to train")
    parser.add_argument("--depth", type=int, default=None, help="n_layers of that model (default: the sweep's)")
    parser.add_argument("--mlflow-uri", default=None, help="default: sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--run", default=None, help="parent run id of the sweep (default: the latest)")
    args = parser.parse_args(argv)
    for flag, value in (("--width", args.width), ("--depth", args.depth)):
        if value is not None and value <= 0:
            raise ConfigError(f"{flag} {value} must be a positive integer, e.g. --width 1024 --depth 4")
    return args


def sweep_setting(sweep, key: str, default):
    """A setting of the sweep: its single searched value across trials, else the parent's param, else default."""
    if key in sweep.trials and len(sweep.trials):
        values = sweep.trials[key].dropna().astype(str).unique()
        if len(values) > 1:
            raise ConfigError(f"the sweep searched several {key} values ({', '.join(values)}); pass --run with a "
                              f"sweep that keeps {key} fixed")
        if len(values):
            return type(default)(values[0]) if default is not None else values[0]
    return type(default)(sweep.params[key]) if key in sweep.params and default is not None else default


def recommend(optima, param: str, width: int) -> tuple[float, str]:
    """(lr, how it was obtained) for a model of `width` under `param`, from the per-width optima."""
    mine = optima[optima.parametrization == param].sort_values("width")
    edge = "; the optimum sits at the grid's edge at some width, widen the lr grid" if mine.at_edge.any() else ""
    if param == "mup":
        lr = float(np.exp(np.log(mine.opt_lr_refined).mean()))
        return lr, (f"μP optimum (geometric mean over widths {', '.join(map(str, mine.width))}; per-width optima "
                    f"{mine.opt_lr_refined.min():.3g}–{mine.opt_lr_refined.max():.3g}){edge}")
    if len(mine) < 2:
        lr = float(mine.opt_lr_refined.iloc[0])
        return lr, f"SP optimum at the only swept width {mine.width.iloc[0]} (no fit possible){edge}"
    fit = power_law(mine.width, mine.opt_lr_refined)
    lr, factor = predict(fit, width)
    uncertainty = f"×/÷ {factor:.2f} (one s.e.)" if math.isfinite(factor) else "no error estimate from 2 widths"
    outside = " (extrapolated)" if not mine.width.min() <= width <= mine.width.max() else ""
    return lr, (f"SP power law lr ∝ width^{fit['exponent']:.2f} ± {fit['exponent_se']:.2f} over widths "
                f"{', '.join(map(str, mine.width))}: {lr:.3g} {uncertainty} at width {width}{outside}{edge}")


def command_line(sweep, overrides: dict[str, object]) -> str:
    """`python -m trainer --preset P --set ...` with the sweep's fixed settings plus `overrides`; validated."""
    preset = sweep_preset(sweep)
    settings = {**changed_settings(sweep), **overrides}
    build_config(preset, settings)  # e.g. a width the head count does not divide: one line, exit 2
    sets = [part for k, v in settings.items() for part in ("--set", f"{k}={v}")]
    return shlex.join(["python", "-m", "trainer", "--preset", preset, *sets])


@exits_cleanly_on_bad_input
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sweep = fetch_sweep(args.mlflow_uri or default_tracking_uri(), args.experiment, args.run)
    if "optim.lr" not in sweep.searched:
        raise ConfigError(f"sweep {sweep.run_name} did not search optim.lr; run sweeps/lr_transfer.py first")
    defaults = build_config(sweep_preset(sweep)).model  # what the trials did not override
    unsearched = lambda key, default: default if key in sweep.searched else sweep_setting(sweep, key, default)
    table = transfer_table(sweep.trials, unsearched("model.d_model", defaults.d_model),
                           unsearched("model.parametrization", "sp"))
    optima = optimal_lrs(table)
    if optima.empty:
        raise ConfigError(f"sweep {sweep.run_name} has no finished trials with a val_loss; let it finish "
                          "(python sweeps/lr_transfer.py --resume) or pass --run with another sweep")
    depth = args.depth or sweep_setting(sweep, "model.n_layers", defaults.n_layers)
    params = [p for p in ("mup", "sp") if p in set(optima.parametrization)]
    print(f"sweep {sweep.run_name} ({args.experiment}): {len(table)} trials, {len(optima)} (parametrization, "
          f"width) optima; target width {args.width}, depth {depth}")
    for param in params:
        lr, how = recommend(optima, param, args.width)
        print(f"{param}: optim.lr={lr:.3g}  [{how}]")
    swept_depth = sweep_setting(sweep, "model.n_layers", defaults.n_layers)
    if depth != swept_depth:
        print(f"note: depth {depth} differs from the sweep's n_layers={swept_depth}; μP here transfers across "
              "width only (no depth-μP), so the lr at a new depth is untested")
    best = params[0]
    lr, _ = recommend(optima, best, args.width)
    overrides = {"model.d_model": args.width, "model.n_layers": depth, "model.parametrization": best,
                 "optim.lr": f"{lr:.3g}"}
    if best == "mup":
        overrides["model.base_width"] = sweep_setting(sweep, "model.base_width", defaults.base_width)
    print(command_line(sweep, overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
