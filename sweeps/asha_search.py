"""A broad early-stopping search: optimizer, regularization, batch size and model shape at once.

    python sweeps/asha_search.py --num-samples 24      # Optuna TPE proposes, ASHA stops the weak early

The widths stay multiples of the preset's head count so every sampled model is valid.
"""
import sys

from ray import tune

from sweeps.engine.launch import run_sweep
from sweeps.engine.plan import Dim
from trainer.config import RunConfig


def space(cfg: RunConfig) -> dict[str, Dim]:
    m, steps = cfg.model, cfg.train.max_steps
    widths = sorted({max(m.n_heads, m.d_model * f // (2 * m.n_heads) * m.n_heads) for f in (1, 2, 3)})
    depths = sorted({max(1, m.n_layers // 2), m.n_layers, m.n_layers * 2})
    return {
        "optim.lr": Dim(tune.loguniform(1e-4, 3e-3), grid=(3e-4, 1e-3)),
        "optim.warmup_steps": Dim(tune.randint(0, steps // 4 + 1), grid=(steps // 20,)),
        "optim.weight_decay": Dim(tune.uniform(0.0, 0.2), grid=(0.0, 0.1)),
        "model.dropout": Dim(tune.uniform(0.0, 0.2), grid=(0.0, 0.1)),
        "train.batch_size": Dim(tune.choice([8, 16, 32]), grid=(cfg.train.batch_size,)),
        "model.d_model": Dim(tune.choice(widths), grid=(m.d_model,)),
        "model.n_layers": Dim(tune.choice(depths), grid=(m.n_layers,)),
    }


if __name__ == "__main__":
    sys.exit(run_sweep("asha_search", space))
