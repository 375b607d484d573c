"""Which peak learning rate and warmup length give the best validation perplexity? (the seed's question)

    python sweeps/lr_warmup.py                   # preset cpu without CUDA, seed with it; Optuna TPE + ASHA
    python sweeps/lr_warmup.py --search grid     # the full lr × warmup table, no early stopping

Every trial pre-trains a GPT, reports val_loss/val_ppl at each eval, then fine-tunes on AG News.
"""
import sys

from ray import tune

from sweeps.engine.launch import run_sweep
from sweeps.engine.plan import Dim
from trainer.config import RunConfig


def space(cfg: RunConfig) -> dict[str, Dim]:
    steps = cfg.train.max_steps  # warmup is searched as a share of the run, so presets of any length work
    lr = cfg.optim.lr  # and the lr around the preset's own (cpu 3e-3, seed 3e-4): each size is searched where it trains
    return {
        "optim.lr": Dim(tune.loguniform(lr / 3, lr * 3), grid=(lr / 3, lr, lr * 3)),
        # No warmup, 5 % and 25 % of the run; a short run can round two of them to one value: keep it once.
        "optim.warmup_steps": Dim(tune.randint(0, steps // 4 + 1), grid=tuple(sorted({0, steps // 20, steps // 4}))),
    }


if __name__ == "__main__":
    sys.exit(run_sweep("lr_warmup", space))
