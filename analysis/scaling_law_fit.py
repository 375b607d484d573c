"""Fit L(N, D) = E + A/N^α + B/D^β to runs, bootstrap it, and find the compute-optimal (N, D) for a budget.

    python -m analysis.scaling_law --experiment scaling      (the CLI; this module is pure numpy/scipy)

The recipe of Besiroglu et al. 2024 (arXiv 2404.10102, replicating Hoffmann et al. 2022's approach 3): minimise
the Huber loss (δ = 1e-3) between log L_pred and log L_measured, with L_pred = exp(LSE(a − α log N, b − β log D,
e)), A = e^a, B = e^b, E = e^e, by quasi-Newton descent (BFGS) from the best points of their grid of initial
values (all 4,500 are evaluated; the descent starts from the 16 best), keeping the best optimum.
Confidence intervals come from refitting runs resampled with replacement. N is the non-embedding parameter count,
D the training tokens; C (the budget) is the compute ledger's FLOPs (trainer/compute.py), so the frontier
minimises L(N, D) along flops_per_token(N) · D = C rather than along 6·N·D.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from trainer.compute import flops_per_token
from trainer.config import ConfigError

HUBER_DELTA = 1e-3
MIN_SIZES = 3  # distinct N: A and α need more than two points on the N axis once E is shared
MIN_BUDGETS = 3  # distinct D: likewise B and β
# Besiroglu et al.'s grid: α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}.
INIT_GRID = [np.array(p) for p in itertools.product(range(0, 30, 5), range(0, 30, 5), np.arange(-1, 1.01, 0.5),
                                                    np.arange(0, 2.01, 0.5), np.arange(0, 2.01, 0.5))]


@dataclass(frozen=True)
class LawFit:
    E: float
    A: float
    alpha: float
    B: float
    beta: float

    @classmethod
    def from_theta(cls, theta: np.ndarray) -> LawFit:
        a, b, e, alpha, beta = (float(v) for v in theta)
        return cls(E=float(np.exp(e)), A=float(np.exp(a)), alpha=alpha, B=float(np.exp(b)), beta=beta)

    @property
    def theta(self) -> np.ndarray:
        return np.array([np.log(self.A), np.log(self.B), np.log(self.E), self.alpha, self.beta])

    def predict(self, n, d) -> np.ndarray:
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta


def check_fittable(n: np.ndarray, d: np.ndarray) -> None:
    """Refuse, in one line, what cannot be fitted honestly."""
    sizes, budgets = len(np.unique(n)), len(np.unique(d))
    if budgets == 1:
        raise ConfigError(f"all {len(n)} runs saw the same number of tokens ({d[0]:.3g}): with a single token "
                          "budget B/D^β cannot be told from E; run the sweep over several train.max_steps")
    if sizes < MIN_SIZES or budgets < MIN_BUDGETS:
        raise ConfigError(f"{sizes} model size(s) × {budgets} token budget(s) among {len(n)} finished runs: the "
                          f"fit needs at least {MIN_SIZES} sizes and {MIN_BUDGETS} budgets; add sizes or "
                          "train.max_steps values (sweeps/scaling.py runs 5 × 3)")


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
               weights: np.ndarray) -> tuple[float, np.ndarray]:
    """Weighted Huber loss of the log-loss residuals, and its gradient in (a, b, e, α, β)."""
    a, b, e, alpha, beta = theta
    t_n, t_d = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(t_n, t_d), e)  # log-sum-exp, by hand: scipy's costs more than the rest here
    p_n, p_d, p_e = np.exp(t_n - top), np.exp(t_d - top), np.exp(e - top)
    total = p_n + p_d + p_e
    residual = top + np.log(total) - log_l
    small = np.abs(residual) <= HUBER_DELTA
    loss = np.where(small, 0.5 * residual ** 2, HUBER_DELTA * (np.abs(residual) - 0.5 * HUBER_DELTA))
    dloss = weights * np.where(small, residual, HUBER_DELTA * np.sign(residual)) / total  # × ∂LSE/∂term below
    grad = np.array([dloss @ p_n, dloss @ p_d, dloss @ p_e, -dloss @ (p_n * log_n), -dloss @ (p_d * log_d)])
    return float(weights @ loss), grad


def _grid_losses(log_n, log_d, log_l) -> np.ndarray:
    """The objective at every point of INIT_GRID at once (vectorized), to start the descent from the best of them."""
    grid = np.array(INIT_GRID)
    a, b, e, alpha, beta = (grid[:, i:i + 1] for i in range(5))
    pred = np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e)
    r = np.abs(pred - log_l)
    return np.where(r <= HUBER_DELTA, 0.5 * r ** 2, HUBER_DELTA * (r - 0.5 * HUBER_DELTA)).sum(axis=1)


def _fit_from(starts, log_n, log_d, log_l, weights) -> list[tuple[float, np.ndarray]]:
    """Local optima from each start, best first. BFGS, not L-BFGS-B: the same optima here in a fifth of the time
    (scipy 1.17: ~0.12 s vs 0.6 s a fit of 24 runs); tolerances far below the Huber loss's ~1e-5 scale."""
    results = []
    for start in starts:
        res = minimize(_objective, start, args=(log_n, log_d, log_l, weights), jac=True, method="BFGS",
                       options={"gtol": 1e-10, "maxiter": 2000})
        if np.all(np.isfinite(res.x)) and res.x[3] >= 0 and res.x[4] >= 0:  # a loss that grows with N or D: no
            results.append((float(res.fun), res.x))
    return sorted(results, key=lambda r: r[0])


def fit_law(n, d, loss, local_starts: int = 16) -> tuple[LawFit, list[np.ndarray]]:
    """The best fit from the `local_starts` best points of INIT_GRID (the objective is evaluated at all 4,500
    first, vectorized), and the 4 best optima found (the starting points of the bootstrap fits)."""
    n, d, loss = (np.asarray(v, float) for v in (n, d, loss))
    check_fittable(n, d)
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    best_grid = np.argsort(_grid_losses(log_n, log_d, log_l))[:local_starts]
    ranked = _fit_from([INIT_GRID[i] for i in best_grid], log_n, log_d, log_l, np.ones_like(n))
    if not ranked:
        raise ConfigError("the L(N, D) fit found no finite optimum; check that the runs' val_loss values are finite")
    return LawFit.from_theta(ranked[0][1]), [theta for _, theta in ranked[:4]]


def bootstrap(n, d, loss, starts: list[np.ndarray], samples: int = 200, seed: int = 0) -> list[LawFit]:
    """Fits to `samples` resamplings of the runs (with replacement), each from the point fit's best optima.
    A resampling left with too few sizes or budgets is drawn again."""
    n, d, loss = (np.asarray(v, float) for v in (n, d, loss))
    rng = np.random.default_rng(seed)
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    fits = []
    while len(fits) < samples:
        # Counts per run as weights: the same objective as repeating the resampled runs.
        weights = np.bincount(rng.integers(0, len(n), len(n)), minlength=len(n)).astype(float)
        chosen = weights > 0
        if len(np.unique(n[chosen])) < MIN_SIZES or len(np.unique(d[chosen])) < MIN_BUDGETS:
            continue
        ranked = _fit_from(starts[:2], log_n, log_d, log_l, weights)
        if ranked:
            fits.append(LawFit.from_theta(ranked[0][1]))
    return fits


def interval(values, level: float = 0.9) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap values."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(values, float), [tail, 100 - tail])
    return float(low), float(high)


def optimal_allocation(fit: LawFit, flops: float, flops_per_token: Callable[[float], float],
                       n_range: tuple[float, float] = (1e3, 1e13)) -> tuple[float, float, float]:
    """(N_opt, D_opt, L_opt) minimising L(N, D) along flops_per_token(N) · D = flops, searched in log N."""
    def loss_at(log_n: float) -> float:
        n = float(np.exp(log_n))
        return float(fit.predict(n, flops / flops_per_token(n)))

    grid = np.linspace(np.log(n_range[0]), np.log(n_range[1]), 241)
    n_grid = np.exp(grid)
    start = int(np.argmin(fit.predict(n_grid, flops / flops_per_token(n_grid))))  # flops_per_token takes arrays
    low, high = grid[max(0, start - 1)], grid[min(len(grid) - 1, start + 1)]
    best = minimize_scalar(loss_at, bounds=(low, high), method="bounded").x
    n_opt = float(np.exp(best))
    d_opt = flops / flops_per_token(n_opt)
    return n_opt, d_opt, float(fit.predict(n_opt, d_opt))


def family_flops_per_token(vocab_size: int, context_length: int, aspect: float) -> Callable[[float], float]:
    """Training FLOPs per token of a model of N non-embedding parameters with d_model / n_layers = aspect
    (N ≈ 12·n_layers·d², so d = (N·aspect/12)^⅓), by the ledger's convention: the output layer and attention
    included, which dominate at the small sizes a CPU sweep reaches."""
    def at(n: float) -> float:
        d_model = (n * aspect / 12) ** (1 / 3)
        return flops_per_token(d_model, d_model / aspect, vocab_size, context_length)
    return at
