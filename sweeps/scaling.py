"""From a sweep to a scaling law: every model size × every token budget, each run its own full schedule.

    python sweeps/scaling.py --data gutenberg --tokenizer bpe:1024    # then: python -m analysis.scaling_law --experiment scaling

A grid (no early stopping: every run must reach its own end) over model sizes (width × depth, 5 sizes spanning
31× non-embedding parameters) × token budgets (train.max_steps: a half, one and two times the preset's steps).
A size is one grid point of several dotted keys: width, depth, heads and that size's learning rate (lr ∝ 1/width,
μP's rule for Adam, not searched per size: trainer/sizes.py); a budget sets its steps, its own warmup (10 %) +
cosine to lr/10 and one eval at its end. MLflow and the report see those plain keys (model.d_model,
train.max_steps, ...). Dropout is off (a later --set may turn it on). --search grid (the default) or random:
Optuna cannot propose a grid point of several keys.
Use a corpus no run sees twice (--data gutenberg, 99 books; a folder of GPTSWEEP_DATA_DIR or any path): past one
epoch the tokens repeat, which the fit cannot tell from fresh ones. The longest budget is 2 × train.max_steps ×
batch_size × context_length tokens (cpu: 3,600 × 8 × 128 = 3.7M; WikiText-2's local copy has 446k bpe:1024 tokens).
"""
import sys

from ray import tune

from sweeps.engine.launch import run_sweep
from sweeps.engine.plan import Dim
from trainer.config import RunConfig
from trainer.sizes import budget_params, size_params

SHAPES = ((32, 1), (48, 1), (64, 2), (96, 2), (128, 2))  # (d_model, n_layers): 12.8k to 396k non-embedding
BUDGET_FACTORS = (0.5, 1.0, 2.0)  # of the preset's train.max_steps


def space(cfg: RunConfig) -> dict[str, Dim]:
    sizes = [size_params(d, n) for d, n in SHAPES]
    budgets = [budget_params(max(2, round(cfg.train.max_steps * f))) for f in BUDGET_FACTORS]
    return {
        "scaling.model": Dim(tune.choice(sizes), grid=tuple(sizes)),
        "scaling.budget": Dim(tune.choice(budgets), grid=tuple(budgets)),
    }


if __name__ == "__main__":
    sys.exit(run_sweep("scaling", space, ["--set", "model.dropout=0", *sys.argv[1:]], default_search="grid"))
