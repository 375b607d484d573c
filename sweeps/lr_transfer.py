"""Sweep small, train big: the learning rate × width grid under SP and μP, to see whether the optimum transfers.

    python sweeps/lr_transfer.py --data gutenberg   # grid: 6 lrs × 4 widths × {sp, mup}, 48 trials, no early stopping
    python -m analysis.transfer --experiment lr_transfer --width 1024     # then: what to use at width 1024

Widths are the preset's d_model × 1/4, 1/2, 1 and 2 (multiples of its head count); learning rates a factor 2
apart around the preset's. μP's base width is the preset's d_model, where μP and SP coincide. Every trial trains
the preset's steps on the same batches (equal tokens); the other settings are the preset's. Widths compare best
without ASHA, which would stop the slow-learning wide SP trials early: the grid search runs every trial to the end.
Sweep on a corpus that no trial repeats (gutenberg: ~19M tokens): on a small one the longer runs overfit, and the
optimum then says more about repetition than about the width.
"""
import sys

from ray import tune

from sweeps.engine.launch import run_sweep
from sweeps.engine.plan import Dim
from trainer.config import RunConfig


def space(cfg: RunConfig) -> dict[str, Dim]:
    m, lr = cfg.model, cfg.optim.lr
    widths = sorted({max(m.n_heads, m.d_model * f // (4 * m.n_heads) * m.n_heads) for f in (1, 2, 4, 8)})
    lrs = tuple(lr * 2.0 ** k for k in range(-3, 3))
    return {
        "optim.lr": Dim(tune.loguniform(min(lrs), max(lrs)), grid=lrs),
        "model.d_model": Dim(tune.choice(widths), grid=tuple(widths)),
        "model.parametrization": Dim(tune.choice(["sp", "mup"]), grid=("sp", "mup")),
        # One value, searched so that every trial records it (analysis.transfer needs it to transfer μP's lr).
        "model.base_width": Dim(tune.choice([m.d_model]), grid=(m.d_model,)),
    }


if __name__ == "__main__":
    sys.exit(run_sweep("lr_transfer", space, default_search="grid"))
