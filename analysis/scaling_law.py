"""Fit a scaling law to a sweep's runs and say which model and how many tokens a compute budget should buy.

    python -m analysis.scaling_law --experiment scaling [--budget-flops 1e15] [--mlflow-uri URI] [--run ID] [--out DIR]

Reads the latest sweep of the experiment (or --run) from MLflow (analysis.runs.fetch_sweep); every completed
trial is one point: N = n_params_non_embedding, D = tokens, C = flops (the compute ledger's metrics), L = its
final val_loss. Fits L(N, D) = E + A/N^α + B/D^β (analysis/scaling_law_fit.py), bootstraps it over runs, writes
isoflop.png, surface.png and frontier.png to reports/<experiment>/<the sweep's Tune folder name>/scaling/, and
prints the fit. With --budget-flops C it prints the compute-optimal (N, D) for C, the predicted val_loss with its
90 % interval and a `python -m trainer` line with a width, depth and steps that come near that N and D.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import Sweep, changed_settings, fetch_sweep, report_folder, sweep_preset
from trainer import result_schema as R
from trainer.cli import ArgumentParser, default_tracking_uri, exits_cleanly_on_bad_input
from trainer.compute import non_embedding_params
from trainer.config import ConfigError, RunConfig, config_from_params
from trainer.sizes import budget_params, shape_for, size_params

# The fit (scipy) and its figures (matplotlib) are imported where they are used: 2.3 of the 3.1 s this module
# takes to import, which bad flags would otherwise wait for.

def trial_config(sweep: Sweep, trial: pd.Series) -> RunConfig:
    """A trial's config: the sweep's fixed params (the parent's, as strings) with the trial's searched values
    (plain dotted keys: trainer.config.spread_params)."""
    fixed = {k: v for k, v in sweep.params.items() if "." in k and not k.startswith("sweep.") and v != "None"}
    return config_from_params({**fixed, **{key: trial[key] for key in sweep.searched}})


def scaling_points(sweep: Sweep) -> pd.DataFrame:
    """One row per completed trial with a ledger: n, d, flops, loss and its shape (d_model, n_layers, vocab, ...)."""
    done = sweep.trials[(sweep.trials.outcome == R.COMPLETED) & sweep.trials.final_val_loss.notna()
                        & sweep.trials.flops.notna()]
    rows = []
    for _, trial in done.iterrows():
        m = trial_config(sweep, trial).model
        vocab = (trial.n_params - trial.n_params_non_embedding) / m.d_model - m.context_length
        rows.append({"n": trial.n_params_non_embedding, "d": trial.tokens, "flops": trial.flops,
                     "loss": trial.final_val_loss, "d_model": m.d_model, "n_layers": m.n_layers,
                     "context_length": m.context_length, "vocab_size": round(vocab),
                     "tokens_per_step": trial.tokens / trial.steps})
    return pd.DataFrame(rows, columns=["n", "d", "flops", "loss", "d_model", "n_layers", "context_length",
                                       "vocab_size", "tokens_per_step"])


def trainer_command(sweep: Sweep, points: pd.DataFrame, n_opt: float, d_opt: float) -> tuple[str, int, int]:
    """The `python -m trainer` line for a model near n_opt trained on ≈ d_opt tokens, its N and its D."""
    d_model, n_layers = shape_for(n_opt)
    tokens_per_step = int(points.tokens_per_step.iloc[0])
    steps = max(1, round(d_opt / tokens_per_step))
    # The sweep's own --set values (dropout 0, ...) hold too; evals as often as the preset has them.
    kept = changed_settings(sweep)
    sets = {**kept, **size_params(d_model, n_layers), **budget_params(steps)}
    sets.pop("train.eval_every")
    words = ["python", "-m", "trainer", "--preset", sweep_preset(sweep),
             "--data", sweep.params.get("data.source", "wikitext-2"),
             "--tokenizer", sweep.params.get("data.tokenizer", "gpt2")]
    for key, value in sets.items():
        words += ["--set", f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"]
    return shlex.join(words), non_embedding_params(d_model, n_layers), steps * tokens_per_step


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m analysis.scaling_law")
    parser.add_argument("--experiment", default="scaling")
    parser.add_argument("--mlflow-uri", default=None, help="default: sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--run", default=None, help="parent run id of the sweep (default: the latest)")
    parser.add_argument("--out", default=None, help="figures folder (default: reports/<experiment>/<sweep folder>/scaling)")
    parser.add_argument("--budget-flops", type=float, default=None, help="recommend (N, D) for this many FLOPs")
    parser.add_argument("--bootstraps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _describe(fit, boots) -> list[str]:
    from analysis.scaling_law_fit import interval

    lines = []
    for name in ("E", "A", "alpha", "B", "beta"):
        low, high = interval([getattr(b, name) for b in boots])
        lines.append(f"  {name:5s} = {getattr(fit, name):.4g}   90 % interval [{low:.4g}, {high:.4g}]")
    return lines


def _recommend(sweep, points, fit, boots, budget: float, per_token) -> list[str]:
    from analysis.scaling_law_fit import interval, optimal_allocation

    n_opt, d_opt, loss = optimal_allocation(fit, budget, per_token)
    n_band = interval([optimal_allocation(b, budget, per_token)[0] for b in boots])
    command, n_real, d_real = trainer_command(sweep, points, n_opt, d_opt)
    low, high = interval([b.predict(n_real, d_real) for b in boots])
    reach = "inside" if points.flops.max() >= budget else f"{budget / points.flops.max():.3g}× beyond"
    return [f"budget {budget:.3g} FLOPs ({reach} the runs' largest): N_opt = {n_opt:,.0f} non-embedding parameters "
            f"(90 % [{n_band[0]:,.0f}, {n_band[1]:,.0f}]), D_opt = {d_opt:,.0f} tokens "
            f"({d_opt / n_opt:.3g} tokens per parameter), predicted val_loss {loss:.4f}",
            f"nearest shape: N = {n_real:,}, D = {d_real:,} tokens, predicted val_loss "
            f"{float(fit.predict(n_real, d_real)):.4f} (90 % interval [{low:.4f}, {high:.4f}])", command]


@exits_cleanly_on_bad_input
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.budget_flops is not None and not 0 < args.budget_flops < float("inf"):
        raise ConfigError(f"--budget-flops {args.budget_flops:g} must be a positive number of FLOPs, e.g. 1e15")
    if args.bootstraps < 10:
        raise ConfigError(f"--bootstraps {args.bootstraps} is too few for a 90 % interval; use at least 10")
    from analysis import scaling_law_figures as figures
    from analysis.scaling_law_fit import bootstrap, family_flops_per_token, fit_law

    sweep = fetch_sweep(args.mlflow_uri or default_tracking_uri(), args.experiment, args.run)
    points = scaling_points(sweep)
    fit, starts = fit_law(points.n, points.d, points.loss)  # refuses (ConfigError) too few sizes or budgets
    boots = bootstrap(points.n, points.d, points.loss, starts, samples=args.bootstraps, seed=args.seed)
    aspect = float(np.median(points.d_model / points.n_layers))
    per_token = family_flops_per_token(int(points.vocab_size.iloc[0]), int(points.context_length.iloc[0]), aspect)
    out = Path(args.out or report_folder(sweep) / "scaling")
    out.mkdir(parents=True, exist_ok=True)
    figures.save(figures.isoflop_curves(fit, points.n, points.d, points.loss, points.flops, per_token),
                 out / "isoflop.png")
    figures.save(figures.fitted_surface(fit, points.n, points.d, points.loss), out / "surface.png")
    c_range = (points.flops.min() / 3, max(points.flops.max() * 30, args.budget_flops or 0))
    figures.save(figures.frontier(fit, boots, c_range, per_token, points.n, points.d, points.flops),
                 out / "frontier.png")
    residual = np.abs(fit.predict(points.n, points.d) / points.loss - 1)
    lines = [f"{sweep.experiment} / {sweep.run_name}: {len(points)} runs, {points.n.nunique()} sizes × "
             f"{points.d.nunique()} token budgets; L(N, D) = E + A/N^alpha + B/D^beta (Huber on log loss, "
             f"{len(boots)} bootstraps); max |rel. residual| {residual.max():.2%}", *_describe(fit, boots)]
    if args.budget_flops is not None:
        lines += _recommend(sweep, points, fit, boots, args.budget_flops, per_token)
    lines.append(f"figures: {out}/isoflop.png, surface.png, frontier.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
