"""Learning-rate transfer across width: optimal lr per width, a power-law fit, the transfer figure and table.

    python -m analysis.report --experiment lr_transfer     (the report's transfer section; also analysis.transfer)

Everything here is a pure function of a `table`: one row per trial with columns parametrization, width, lr and
val_loss (NaN where the trial diverged or failed), built from a sweep (`transfer_table`) or by the benchmark.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import figures
from analysis.runs import usable_trials

LR, WIDTH, PARAM = "optim.lr", "model.d_model", "model.parametrization"
COLUMNS = ("parametrization", "width", "lr", "val_loss")


def transfer_table(trials: pd.DataFrame, default_width: int | None = None,
                   default_param: str = "sp") -> pd.DataFrame:
    """The sweep's trials as a transfer table; unsearched width/parametrization take the given defaults.
    Trials without a usable final val_loss (diverged, failed, unfinished) get NaN: they count as not optimal."""
    ok = set(usable_trials(trials).trial_id)
    table = pd.DataFrame({
        "parametrization": trials[PARAM].astype(str) if PARAM in trials else default_param,
        "width": pd.to_numeric(trials[WIDTH]) if WIDTH in trials else default_width,
        "lr": pd.to_numeric(trials[LR]),
        "val_loss": [v if t in ok else math.nan for t, v in zip(trials.trial_id, trials.final_val_loss)]})
    return table.reset_index(drop=True)


def refine_log2(log2_lrs: np.ndarray, losses: np.ndarray, i: int) -> float:
    """log2 of the vertex of the parabola through the grid minimum i and its two neighbours (sub-grid optimum);
    the grid point itself at an edge of the grid or when the three points are not convex."""
    if i == 0 or i == len(log2_lrs) - 1 or not np.isfinite(losses[i - 1:i + 2]).all():
        return float(log2_lrs[i])
    (x0, x1, x2), (y0, y1, y2) = log2_lrs[i - 1:i + 2], losses[i - 1:i + 2]
    denominator = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    if denominator >= 0:
        return float(x1)
    vertex = x1 - 0.5 * ((x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)) / denominator
    return float(np.clip(vertex, x0, x2))


def optimal_lrs(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (parametrization, width): opt_lr (the grid's best), opt_lr_refined (parabola in log2 lr),
    best_val_loss, at_edge (the best lr is the grid's smallest or largest: the true optimum may lie outside)."""
    rows = []
    for (param, width), group in table.groupby(["parametrization", "width"], sort=True):
        mean = group.groupby("lr").val_loss.mean().sort_index()  # repeats of a grid point: their mean
        if mean.isna().all():
            continue
        losses = mean.to_numpy(dtype=float)
        i = int(np.nanargmin(losses))
        log2 = np.log2(mean.index.to_numpy(dtype=float))
        rows.append({"parametrization": param, "width": int(width), "opt_lr": float(mean.index[i]),
                     "opt_lr_refined": 2.0 ** refine_log2(log2, losses, i), "best_val_loss": float(losses[i]),
                     "at_edge": i in (0, len(losses) - 1), "lrs_tried": len(losses)})
    return pd.DataFrame(rows, columns=["parametrization", "width", "opt_lr", "opt_lr_refined", "best_val_loss",
                                       "at_edge", "lrs_tried"])


def drift_log2(optima: pd.DataFrame, param: str) -> float:
    """|log2(opt lr at the largest width / at the smallest)| on the grid: 1 is one factor-2 step."""
    mine = optima[optima.parametrization == param].sort_values("width")
    return abs(math.log2(mine.opt_lr.iloc[-1] / mine.opt_lr.iloc[0])) if len(mine) >= 2 else math.nan


def transfer_gap(table: pd.DataFrame, optima: pd.DataFrame, param: str) -> float:
    """The largest width's val_loss at the smallest width's optimal lr, relative to its best: 0.01 is 1 % worse."""
    mine = optima[optima.parametrization == param].sort_values("width")
    if len(mine) < 2:
        return math.nan
    small, large = mine.iloc[0], mine.iloc[-1]
    at = table[(table.parametrization == param) & (table.width == large.width) & np.isclose(table.lr, small.opt_lr)]
    return float(at.val_loss.mean() / large.best_val_loss - 1) if len(at) else math.nan


def power_law(widths, lrs) -> dict[str, float]:
    """Least squares of log lr = a + b·log width: exponent b with its standard error, and the residual scatter
    (log space) that prediction uses; standard errors are NaN with fewer than 3 widths."""
    x, y = np.log(np.asarray(widths, dtype=float)), np.log(np.asarray(lrs, dtype=float))
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        raise ValueError("a power law needs optima at two or more widths")
    b, a = np.polyfit(x, y, 1)
    sxx = float(((x - x.mean()) ** 2).sum())
    s = float(np.sqrt(((y - (a + b * x)) ** 2).sum() / (n - 2))) if n > 2 else math.nan
    return {"exponent": float(b), "exponent_se": s / math.sqrt(sxx), "log_prefactor": float(a), "resid_sd": s,
            "n": n, "x_mean": float(x.mean()), "sxx": sxx}


def predict(fit: dict[str, float], width: float) -> tuple[float, float]:
    """(lr, factor): the fit's lr at `width` and the ×/÷ factor of one standard error of that prediction."""
    x = math.log(width)
    se = fit["resid_sd"] * math.sqrt(1 / fit["n"] + (x - fit["x_mean"]) ** 2 / fit["sxx"])
    return math.exp(fit["log_prefactor"] + fit["exponent"] * x), math.exp(se)


def transfer_figure(table: pd.DataFrame, optima: pd.DataFrame | None = None):
    """Val loss against lr, one curve per width (darker = wider), the optimum marked; a panel per parametrization."""
    optima = optimal_lrs(table) if optima is None else optima
    params = [p for p in ("sp", "mup") if p in set(table.parametrization)] or sorted(set(table.parametrization))
    fig, axes = plt.subplots(1, len(params), figsize=(figures.WIDTH, 4.0), sharey=True, squeeze=False)
    widths = sorted(table.width.unique())
    colours = plt.get_cmap(figures.CMAP)(np.linspace(0.85, 0.0, len(widths)))
    finite = table.val_loss[np.isfinite(table.val_loss)]
    for ax, param in zip(axes[0], params):
        for width, colour in zip(widths, colours):
            curve = table[(table.parametrization == param) & (table.width == width)].groupby("lr").val_loss.mean()
            ax.plot(curve.index, curve.values, "-o", color=colour, ms=3, label=f"width {width}")
            best = optima[(optima.parametrization == param) & (optima.width == width)]
            if len(best):
                ax.plot(best.opt_lr, best.best_val_loss, "*", color=colour, ms=14, mec="black", mew=0.6)
        ax.set_xscale("log", base=2)
        ax.set_title({"sp": "standard parametrization (SP)", "mup": "μP"}.get(param, param))
        ax.set_xlabel("optim.lr (μP: the base-width lr)" if param == "mup" else "optim.lr")
        ax.grid(alpha=0.3)
    if len(finite):  # diverged trials would stretch the axis: clip to a little above the worst finite curve
        spread = finite.max() - finite.min()
        axes[0][0].set_ylim(finite.min() - 0.05 * spread, min(finite.max(), finite.min() + 1.5) + 0.05 * spread)
    axes[0][0].set_ylabel("final val_loss (nats)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="★ optimum")
    fig.tight_layout()
    return fig


def optima_markdown(optima: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """The table of optimal lr per width, with drift and transfer gap per parametrization."""
    lines = ["| parametrization | width | optimal lr (grid) | refined | best val_loss | at grid edge |",
             "|:---|---:|---:|---:|---:|:---|"]
    for _, r in optima.iterrows():
        lines.append(f"| {r.parametrization} | {r.width} | {r.opt_lr:.3g} | {r.opt_lr_refined:.3g} | "
                     f"{r.best_val_loss:.4f} | {'yes' if r.at_edge else ''} |")
    lines.append("")
    for param in sorted(set(optima.parametrization)):
        lines.append(f"- {param}: drift |log2(opt lr widest / narrowest)| = {drift_log2(optima, param):.2f}; "
                     f"widest model at the narrowest's optimum: {transfer_gap(table, optima, param):+.2%} val_loss")
    return lines


def transfer_section(sweep, out, written: list) -> list[list[str]]:
    """The report's section for a sweep that searched optim.lr with model.d_model or model.parametrization:
    the transfer figure and the optima table; [] for any other sweep."""
    if LR not in sweep.searched or not {WIDTH, PARAM} & set(sweep.searched) or sweep.trials.empty:
        return []
    width0 = int(sweep.params.get(WIDTH, 256)) if WIDTH not in sweep.searched else None
    table = transfer_table(sweep.trials, width0, str(sweep.params.get(PARAM, "sp")))
    optima = optimal_lrs(table)
    lines = ["## Learning-rate transfer across width", ""]
    if optima.empty:
        return [lines + ["No finished trials with a val_loss yet."]]
    written.append(out / "lr_transfer.png")
    figures.save(transfer_figure(table, optima), written[-1])
    return [lines + ["![val_loss against lr per width, a panel per parametrization](lr_transfer.png)", "",
                     *optima_markdown(optima, table), "",
                     "What to use at another width: `python -m analysis.transfer --experiment "
                     f"{sweep.experiment} --run {sweep.run_id} --width W`. Whether μP holds on this code at all: "
                     "`python -m trainer.coord_check` (each activation's RMS against width: flat under μP)."]]
