"""Figures of a scaling-law fit: isoFLOP curves, the fitted surface against the runs, the compute-optimal frontier.

    python -m analysis.scaling_law --experiment scaling       python -m benchmarks.scaling_fit --figure F.png

Each takes the fit (analysis.scaling_law_fit.LawFit), the runs as arrays and returns a matplotlib Figure.
"""
from __future__ import annotations

from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.scaling_law_fit import LawFit, interval, optimal_allocation  # noqa: E402

DPI = 110


def isoflop_curves(fit: LawFit, n, d, loss, flops, flops_per_token: Callable[[float], float]):
    """Predicted loss against N along a fixed budget C (one curve per C level of the runs), the runs on top."""
    n, d, loss, flops = (np.asarray(v, float) for v in (n, d, loss, flops))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    levels = np.geomspace(flops.min(), flops.max(), 5)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(levels)))
    grid = np.geomspace(n.min() / 3, n.max() * 3, 120)
    for c, colour in zip(levels, colours):
        ax.plot(grid, fit.predict(grid, c / np.array([flops_per_token(x) for x in grid])), color=colour,
                label=f"C = {c:.2g} FLOPs")
        n_opt, _, l_opt = optimal_allocation(fit, c, flops_per_token)
        ax.plot(n_opt, l_opt, "o", color=colour, markersize=5)
    points = ax.scatter(n, loss, c=np.log10(flops), cmap="viridis", edgecolor="k", zorder=3, marker="s")
    fig.colorbar(points, ax=ax, label="log10 run FLOPs")
    ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="val_loss (nats/token)",
           title="isoFLOP curves of the fit (dots: their minima) and the runs (squares)")
    ax.set_ylim(loss.min() - 0.1, loss.max() + 0.1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fitted_surface(fit: LawFit, n, d, loss, held_out=None):
    """Left: val_loss against tokens D per model size, the fit as lines. Right: predicted against measured."""
    n, d, loss = (np.asarray(v, float) for v in (n, d, loss))
    held_out = np.zeros(len(n), bool) if held_out is None else np.asarray(held_out, bool)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    sizes = np.unique(n)
    colours = plt.cm.plasma(np.linspace(0, 0.85, len(sizes)))
    grid = np.geomspace(d.min() / 1.5, d.max() * 1.5, 100)
    for size, colour in zip(sizes, colours):
        mine = n == size
        left.plot(grid, fit.predict(size, grid), color=colour, label=f"N = {size:,.0f}")
        left.scatter(d[mine & ~held_out], loss[mine & ~held_out], color=colour, edgecolor="k", zorder=3)
        left.scatter(d[mine & held_out], loss[mine & held_out], color=colour, marker="*", s=120, edgecolor="k",
                     zorder=3)
    left.set(xscale="log", xlabel="training tokens D", ylabel="val_loss (nats/token)",
             title="runs (dots; stars: held out) and L(N, D)")
    left.legend(fontsize=7)
    predicted = fit.predict(n, d)
    right.scatter(loss[~held_out], predicted[~held_out], label="fitted on")
    right.scatter(loss[held_out], predicted[held_out], marker="*", s=120, label="held out")
    span = [min(loss.min(), predicted.min()), max(loss.max(), predicted.max())]
    right.plot(span, span, "k--", linewidth=0.8)
    right.set(xlabel="measured val_loss", ylabel="predicted val_loss", title="prediction vs measurement")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def frontier(fit: LawFit, boots: list[LawFit], flops_range: tuple[float, float],
             flops_per_token: Callable[[float], float], runs_n=None, runs_d=None, runs_flops=None):
    """N_opt(C) and D_opt(C) of the fit with the bootstraps' 90 % band, and where the runs sit."""
    budgets = np.geomspace(*flops_range, 25)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for index, (name, colour) in enumerate((("N_opt (non-embedding parameters)", "C0"),
                                            ("D_opt (training tokens)", "C1"))):
        point = [optimal_allocation(fit, c, flops_per_token)[index] for c in budgets]
        band = [interval([optimal_allocation(b, c, flops_per_token)[index] for b in boots]) for c in budgets]
        ax.plot(budgets, point, color=colour, label=name)
        ax.fill_between(budgets, [lo for lo, _ in band], [hi for _, hi in band], color=colour, alpha=0.2)
    if runs_flops is not None:
        ax.scatter(runs_flops, runs_n, color="C0", marker="s", s=14, label="runs: N")
        ax.scatter(runs_flops, runs_d, color="C1", marker="^", s=14, label="runs: D")
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs C (compute ledger: 6N + output layer + attention)",
           title="compute-optimal frontier, 90 % bootstrap band")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
