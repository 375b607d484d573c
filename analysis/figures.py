"""Figures of a sweep report, each a function of analysis.runs frames returning a matplotlib Figure.

    python -m analysis.report --experiment lr_warmup      (writes them as PNGs beside report.md)

Conventions: Agg backend, 9.5 in × 110 dpi (≈1045 px, fits a README), colour = final val_ppl on a log scale with
viridis (the best trials darkest, so they stand out on white), pruned trials dashed or as triangles,
legends outside the data.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.runs import failed, usable_trials  # noqa: E402
from trainer import result_schema as R  # noqa: E402
from trainer.result_schema import format_value  # noqa: E402

DPI = 110
WIDTH = 9.5  # inches: 1045 px at DPI
CMAP = "viridis"
# Trials with a val_ppl: completed, pruned, and any other (running, interrupted: a report on an unfinished sweep).
MARKERS = {R.COMPLETED: ("o", "completed"), R.PRUNED: ("v", "pruned (ASHA)"), "other": ("s", "unfinished")}
PPL_LABEL = "final val_ppl (lower is better)"


def save(fig, path) -> None:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def integer_valued(values) -> bool:
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return bool(len(values)) and bool((values == values.round()).all())


def log_scale(values) -> bool:
    """Log axis for positive values spanning more than a decade (learning rates, perplexities)."""
    raw = pd.Series(values).dropna()
    values = pd.to_numeric(raw, errors="coerce")
    if values.isna().any():  # text (categorical values): no numeric axis at all
        return False
    return bool(len(values) and values.min() > 0 and values.max() / values.min() > 10)


def _norm(values):
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return Normalize(0, 1)
    if log_scale(values):
        return LogNorm(values.min(), values.max())
    return Normalize(values.min(), values.max() if values.max() > values.min() else values.min() + 1)


def grid_heatmap(pivot: pd.DataFrame, x_key: str, y_key: str):
    """Grid sweep: mean final val_ppl per cell (from tables.grid_pivot), annotated; empty cells marked."""
    fig, ax = plt.subplots(figsize=(WIDTH, 1.6 + 0.8 * max(len(pivot.index), 2)), layout="constrained")
    data = pivot.to_numpy(dtype=float)
    norm = _norm(data.ravel())
    image = ax.imshow(np.ma.masked_invalid(data), cmap=CMAP, norm=norm, aspect="auto")
    for (i, j), value in np.ndenumerate(data):
        if math.isnan(value):
            ax.text(j, i, "no value\n(diverged/failed)", ha="center", va="center", fontsize=8, color="0.3")
            continue
        light = norm(value) > 0.6  # viridis is light at the top: dark text there
        ax.text(j, i, format_value(value), ha="center", va="center", fontsize=10, color="black" if light else "white")
    label = lambda v: f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v)  # noqa: E731
    ax.set_xticks(range(len(pivot.columns)), [label(v) for v in pivot.columns])
    ax.set_yticks(range(len(pivot.index)), [label(v) for v in pivot.index])
    ax.set(xlabel=x_key, ylabel=y_key, title=f"grid sweep: final val_ppl per {x_key} × {y_key} cell")
    fig.colorbar(image, ax=ax, label=PPL_LABEL)
    return fig


def search_scatter(trials: pd.DataFrame, x_key: str, y_key: str | None):
    """Random/Optuna sweep: trials over (x, y) coloured by final val_ppl; pruned as triangles, unfinished
    (running, interrupted) as squares, failed as grey ×. With one searched key, val_ppl itself is the y axis."""
    fig, ax = plt.subplots(figsize=(WIDTH, 5.2), layout="constrained")
    usable = usable_trials(trials)
    y_col = y_key or "final_val_ppl"
    norm = _norm(usable.final_val_ppl)
    kind = usable.outcome.where(usable.outcome.isin(MARKERS), "other")
    for outcome, (marker, label) in MARKERS.items():
        part = usable[kind == outcome]
        if len(part):
            ax.scatter(part[x_key], part[y_col], c=part.final_val_ppl, cmap=CMAP, norm=norm, marker=marker,
                       s=70, edgecolors="black", linewidths=0.5, label=f"{label} ({len(part)})")
    failed_trials = trials[failed(trials)]
    if len(failed_trials) and y_key is not None:
        ax.scatter(failed_trials[x_key], failed_trials[y_col], marker="x", s=70, color="0.5",
                   label=f"diverged/error ({len(failed_trials)})")
    if log_scale(trials[x_key]) or "lr" in x_key.split(".")[-1]:
        ax.set_xscale("log")
    if y_key is None and log_scale(usable.final_val_ppl):
        ax.set_yscale("log")
    elif y_key is not None and integer_valued(trials[y_key]):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=x_key + (" (log scale)" if ax.get_xscale() == "log" else ""), ylabel=y_key or PPL_LABEL,
           title=f"trials over {x_key}" + (f" × {y_key}" if y_key else "") + ", coloured by final val_ppl")
    ax.grid(alpha=0.3, which="both")
    if len(usable):
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=CMAP), ax=ax, label=PPL_LABEL)
    if not ax.get_legend_handles_labels()[0]:
        return fig
    legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    for handle in legend.legend_handles:  # the marker shape is the message; its colour would be one trial's
        if getattr(handle, "get_array", lambda: None)() is not None:  # colour-mapped: unmap, then grey
            handle.set_array(None)
            handle.set_facecolor("0.75")
    return fig


FLOOR_STYLES = {"floor_uniform": ("uniform", ":"), "floor_unigram": ("unigram", "-."), "floor_bigram": ("bigram", "--")}
MAX_LABELLED = 12


def learning_curves(curves: pd.DataFrame, trials: pd.DataFrame, floors: dict[str, float], key: str = "val_loss"):
    """`key` against training step for every trial (pruned dashed, so visibly shorter), the corpus floors as
    labelled horizontal lines; the legend sits right of the axes, best trials first."""
    fig, ax = plt.subplots(figsize=(WIDTH, 5.2), layout="constrained")
    ranked = trials.sort_values("final_val_ppl", na_position="last")
    norm = _norm(usable_trials(trials).final_val_ppl)
    cmap = plt.get_cmap(CMAP)
    for rank, (_, trial) in enumerate(ranked.iterrows()):
        curve = curves[(curves.trial_id == trial.trial_id) & (curves.key == key)].sort_values("step")
        if curve.empty:
            continue
        ppl = trial.final_val_ppl
        color = "0.6" if trial.outcome in R.FAILED_OUTCOMES or pd.isna(ppl) else cmap(norm(ppl))
        label = f"{trial.trial_id} {trial.outcome}, {format_value(ppl)}" if rank < MAX_LABELLED else None
        ax.plot(curve.step, curve.value, color=color, marker="o", markersize=3, linewidth=1.6,
                linestyle="--" if trial.outcome == R.PRUNED else "-", label=label)
    for name, (meaning, style) in FLOOR_STYLES.items():
        if name in floors:
            ax.axhline(floors[name], color="firebrick", linestyle=style, linewidth=1.2,
                       label=f"{meaning} floor {floors[name]:.2f} (ppl {format_value(math.exp(floors[name]))})")
    ax.set(xlabel="training step", ylabel=f"{key} (nats/token)" if "loss" in key else key,
           title=f"{key} by training step (pruned trials dashed; colour = final val_ppl)")
    ax.grid(alpha=0.3)
    more = "" if len(ranked) <= MAX_LABELLED else f"\n(best {MAX_LABELLED} of {len(ranked)})"
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              title="trial outcome, final val_ppl" + more, title_fontsize=8)
    return fig


def axis_is_log(values: pd.Series) -> bool:
    """Log axes for wide positive spans of real numbers (lr, ppl); integers (warmup steps) stay linear."""
    numeric = pd.to_numeric(values, errors="coerce")
    return numeric.notna().all() and log_scale(numeric) and not integer_valued(numeric)


def _axis_positions(values: pd.Series, discrete: bool = True):
    """Values mapped to [0, 1] (log for wide positive spans, codes for text) and tick labels for the axis."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        log = axis_is_log(values)
        scaled = np.log10(numeric) if log else numeric.astype(float)
        low, high = scaled.min(), scaled.max()
        span = high - low if high > low else 1.0
        observed = np.unique(scaled)
        ticks = observed if discrete and len(observed) <= 5 else np.linspace(low, high, 3)  # a grid: its own values
        if integer_valued(numeric):
            ticks = np.unique(np.round(ticks))
        labels = [format_value(10 ** t if log else t) for t in ticks]
        return (scaled - low) / span, (ticks - low) / span, labels
    categories = sorted(values.astype(str).unique())
    codes = values.astype(str).map({c: i for i, c in enumerate(categories)})
    span = max(len(categories) - 1, 1)
    return codes / span, np.arange(len(categories)) / span, categories


def parallel_coordinates(trials: pd.DataFrame, keys: list[str]):
    """One vertical axis per searched key plus final val_ppl; one line per trial, coloured by val_ppl."""
    usable = usable_trials(trials).sort_values("final_val_ppl", ascending=False)  # best drawn last, on top
    columns = [*keys, "final_val_ppl"]
    fig, ax = plt.subplots(figsize=(WIDTH, 5.0), layout="constrained")
    norm = _norm(usable.final_val_ppl)
    positions = {c: _axis_positions(usable[c], discrete=c in keys) for c in columns}
    xs = np.arange(len(columns))
    for i, (_, trial) in enumerate(usable.iterrows()):
        ys = [positions[c][0].iloc[i] for c in columns]
        ax.plot(xs, ys, color=plt.get_cmap(CMAP)(norm(trial.final_val_ppl)), linewidth=1.8, alpha=0.85,
                linestyle="--" if trial.outcome == R.PRUNED else "-")
    for x, column in zip(xs, columns):
        ax.axvline(x, color="black", linewidth=1)
        _, ticks, labels = positions[column]
        for tick, label in zip(ticks, labels):
            ax.text(x + 0.03, tick, label, fontsize=8, va="center", ha="left",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
    ax.set_xticks(xs, [c + (" (log)" if axis_is_log(usable[c]) else "") for c in columns])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(columns) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("parallel coordinates: each line a trial (pruned dashed), each axis from its min to its max")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=CMAP), ax=ax, label=PPL_LABEL)
    return fig


ACCURACIES = {"finetune_acc": ("o", "full fine-tune"), "finetune_acc_fewshot": ("s", "few-shot fine-tune")}
_ACC_STYLE = {"finetune_acc": dict(s=45, color="tab:blue", edgecolors="black", linewidths=0.5, zorder=3),
              # hollow and larger, so an equal accuracy does not hide the full fine-tune's dot
              "finetune_acc_fewshot": dict(s=120, facecolors="none", edgecolors="tab:orange", linewidths=1.8)}


def ppl_vs_accuracy(trials: pd.DataFrame, stats: dict[str, dict]):
    """Final val_ppl (log x) against each fine-tuning accuracy; `stats` from tables.correlation per accuracy."""
    fig, ax = plt.subplots(figsize=(WIDTH, 4.8), layout="constrained")
    usable = usable_trials(trials)
    for column, (marker, meaning) in ACCURACIES.items():
        part = usable[usable[column].notna()] if column in usable else usable.iloc[:0]
        if part.empty:
            continue
        s = stats.get(column, {})
        r = f"Pearson r = {s['pearson']:.2f}, Spearman ρ = {s['spearman']:.2f}" if s.get("n", 0) >= 3 else \
            "fewer than 3 points: no correlation"
        ax.scatter(part.final_val_ppl, 100 * part[column], marker=marker, **_ACC_STYLE[column],
                   label=f"{column} ({meaning}, n={len(part)}): {r}")
    if log_scale(usable.final_val_ppl):
        ax.set_xscale("log")
    ax.set(xlabel="final val_ppl" + (" (log scale)" if ax.get_xscale() == "log" else ""),
           ylabel="classification accuracy (%)", title="does a better language model make a better classifier?")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False, fontsize=8.5)
    return fig
