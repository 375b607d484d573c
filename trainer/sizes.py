"""Model-size rules shared by the scaling sweep, its fit and its benchmark: heads per width, the per-size learning
rate, the warmup of a token budget, and the shape (width × depth) nearest a non-embedding parameter count.

    python sweeps/scaling.py --help       python -m analysis.scaling_law --help

The learning rate is not searched per size: it follows μP's rule for Adam, lr ∝ 1/width, anchored at 2e-3 at
width 128 and capped at 1e-2. Every budget gets its own full schedule: warmup over the
first WARMUP_FRACTION of its steps, then cosine to lr/10 at its last step.
"""
from __future__ import annotations

import math

from trainer.compute import non_embedding_params

LR_ANCHOR = (128, 2e-3)  # (width, lr)
LR_CAP = 1e-2
WARMUP_FRACTION = 0.1
ASPECTS = (16, 128)  # widths per layer allowed when a shape is chosen for a parameter count


def heads_for(d_model: int) -> int:
    """Heads of 16 dimensions below width 256 (the CPU sizes), of 64 from there (the usual GPT head size)."""
    if d_model >= 256 and d_model % 64 == 0:
        return d_model // 64
    return max(1, d_model // 16)


def lr_for(d_model: int) -> float:
    width, lr = LR_ANCHOR
    return min(LR_CAP, lr * width / d_model)


def size_params(d_model: int, n_layers: int) -> dict[str, object]:
    """The dotted config keys of one model size: what sweeps/scaling.py searches as one value."""
    return {"model.d_model": d_model, "model.n_layers": n_layers, "model.n_heads": heads_for(d_model),
            "optim.lr": lr_for(d_model)}


def budget_params(max_steps: int) -> dict[str, object]:
    """The dotted config keys of one token budget: its steps, its own warmup, one eval at its end."""
    return {"train.max_steps": max_steps, "optim.warmup_steps": max(1, round(max_steps * WARMUP_FRACTION)),
            "train.eval_every": max_steps}


def shape_for(n_non_embedding: float, max_layers: int = 64) -> tuple[int, int]:
    """(d_model, n_layers) whose non-embedding parameter count is nearest the target (in log), widths a multiple
    of 16 (of 64 from 256), d_model / n_layers within ASPECTS; ties go to the aspect nearest 64."""
    best, best_key = (16, 1), (math.inf, math.inf)
    for n_layers in range(1, max_layers + 1):
        for d_model in range(16, ASPECTS[1] * n_layers + 1, 16):
            if d_model < ASPECTS[0] * n_layers or (d_model >= 256 and d_model % 64):
                continue
            key = (abs(math.log(non_embedding_params(d_model, n_layers) / n_non_embedding)),
                   abs(math.log(d_model / n_layers / 64)))
            if key < best_key:
                best, best_key = (d_model, n_layers), key
    return best
