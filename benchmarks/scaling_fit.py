"""python -m benchmarks.scaling_fit --json [--data gutenberg] [--tokens-per-param 2,6.3,20] [--no-check] [--figure F.png] [--quick]

Does the scaling law predict runs it has not seen, and does its compute-optimal recommendation hold? Trains the
scaling sweep's 5 model sizes (sweeps/scaling.py's shapes, 12.8k–397k non-embedding parameters) × 3 token budgets,
the budgets `--tokens-per-param` × the largest model's non-embedding parameters (every size gets the same
budgets), each run its own 10 % warmup + cosine to its last step, lr ∝ 1/width (trainer/sizes.py), on a corpus
no run sees twice (default: the Project Gutenberg books of GPTSWEEP_DATA_DIR, a BPE trained on them, the last
10 % of the books held out whole for validation): trainer.loop.Pretrainer directly (no Ray, no MLflow), `--slots`
runs of one thread at a time. Fits L(N, D) = E + A/N^α + B/D^β (analysis/scaling_law_fit.py) on all but the
`--holdout` runs of largest compute and predicts those. Then the check: the fit on every run recommends, for
`--check-flops` (default a quarter of the largest run's FLOPs), N_opt and D_opt and the nearest shape, exactly as
`python -m analysis.scaling_law --budget-flops C` does for a sweep of these runs, and one more run trains that
shape on that many tokens. One JSON object: max_rel_err (|predicted − measured| / measured val_loss of the
held-out runs), inside_interval (all inside their 90 % bootstrap interval), the fit, `data`, `epochs_max` (the
largest share of the training split a run saw), `tokens_per_param_max`, and `check` (recommended shape, predicted
val_loss and interval, measured, inside). Goal: max_rel_err ≤ 0.02, inside_interval, check inside.
The full run needs about an hour of 2 idle cores: run it under `flock /tmp/gptsweep-cpu.lock`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from analysis import scaling_law_figures
from analysis.scaling_law_fit import bootstrap, family_flops_per_token, fit_law, interval, optimal_allocation
from benchmarks.run_pool import prepare, run_adaptively, train_run
from trainer.cli import exits_cleanly_on_bad_input
from trainer.compute import flops_per_token, non_embedding_params
from trainer.config import ConfigError, build_config
from trainer.sizes import budget_params, shape_for, size_params


@dataclass(frozen=True)
class Setup:
    data: str = "gutenberg"  # any --data: a folder of GPTSWEEP_DATA_DIR by name, a path, or a hub name
    tokenizer: str = "bpe:1024"
    shapes: tuple[tuple[int, int], ...] = ((32, 1), (48, 1), (64, 2), (96, 2), (128, 2))  # sweeps/scaling.py's
    tokens_per_param: tuple[float, ...] = (2.0, 6.3, 20.0)  # × the largest model's N: the token budgets
    context: int = 64
    batch_size: int = 8  # twice the steps of batch 16 for the same tokens: less limited by optimization
    eval_batches: int = 40
    holdout: int = 3
    bootstraps: int = 200
    check: bool = True
    check_flops: float | None = None  # None: a quarter of the largest run's FLOPs
    slots: int = 2

    @property
    def tokens_per_step(self) -> int:
        return self.context * self.batch_size

    def budgets(self) -> list[int]:
        """Training steps of each token budget."""
        n_max = max(non_embedding_params(d, n) for d, n in self.shapes)
        return [max(2, round(r * n_max / self.tokens_per_step)) for r in self.tokens_per_param]

    def overrides(self, d_model: int, n_layers: int, steps: int) -> dict[str, object]:
        return {"data.source": self.data, "data.tokenizer": self.tokenizer,
                "data.finetune_train": None, "model.dropout": 0.0, "train.threads": 1, "train.precision": "fp32",
                "model.context_length": self.context, "finetune.max_length": self.context,
                "train.batch_size": self.batch_size, "train.eval_batches": self.eval_batches,
                **size_params(d_model, n_layers), **budget_params(steps)}


QUICK = Setup(shapes=((16, 1), (16, 2), (32, 1), (32, 2), (48, 1)), tokens_per_param=(0.1, 0.2, 0.4), context=16,
              batch_size=4, eval_batches=2, bootstraps=20)


def grid_plan(setup: Setup, vocab_size: int):
    """run_pool's plan: every size × budget at once, dearest first so that the slots finish together."""
    cost = lambda job: job[2] * flops_per_token(job[0], job[1], vocab_size, setup.context)
    jobs = sorted(((d, n, s) for d, n in setup.shapes for s in setup.budgets()), key=cost, reverse=True)
    return lambda results, running: {} if results or running else {j: setup.overrides(*j) for j in jobs}


def evaluate_fit(runs: list[dict], holdout: int, bootstraps: int, vocab_size: int, context: int) -> dict:
    """Fit on all but the `holdout` runs of largest compute; predict those with their 90 % bootstrap intervals."""
    n, d, loss, flops = (np.array([r[k] for r in runs]) for k in ("n_params_non_embedding", "tokens", "val_loss",
                                                                     "flops"))
    held = np.zeros(len(runs), bool)
    held[np.argsort(-flops)[:holdout]] = True
    fit, starts = fit_law(n[~held], d[~held], loss[~held])
    boots = bootstrap(n[~held], d[~held], loss[~held], starts, samples=bootstraps)
    predictions = []
    for i in np.flatnonzero(held):
        low, high = interval([b.predict(n[i], d[i]) for b in boots])
        predicted = float(fit.predict(n[i], d[i]))
        predictions.append({"d_model": runs[i]["d_model"], "n_layers": runs[i]["n_layers"],
                            "tokens": float(d[i]), "flops": float(flops[i]), "measured": float(loss[i]),
                            "predicted": predicted, "interval_90": [low, high],
                            "rel_err": abs(predicted - loss[i]) / loss[i]})
    aspect = float(np.median([r["d_model"] / r["n_layers"] for r in runs]))
    return {"fit": fit, "boots": boots, "predictions": predictions,
            "per_token": family_flops_per_token(vocab_size, context, aspect)}


def recommend(runs: list[dict], budget: float, setup: Setup, vocab_size: int) -> dict:
    """What `python -m analysis.scaling_law --budget-flops budget` says for a sweep of these runs: the fit on all
    of them, N_opt and D_opt, the nearest shape (trainer.sizes.shape_for) at whole steps, and that shape's
    predicted val_loss with its 90 % interval."""
    n, d, loss = (np.array([r[k] for r in runs]) for k in ("n_params_non_embedding", "tokens", "val_loss"))
    fit, starts = fit_law(n, d, loss)
    boots = bootstrap(n, d, loss, starts, samples=setup.bootstraps)
    aspect = float(np.median([r["d_model"] / r["n_layers"] for r in runs]))
    per_token = family_flops_per_token(vocab_size, setup.context, aspect)
    n_opt, d_opt, _ = optimal_allocation(fit, budget, per_token)
    d_model, n_layers = shape_for(n_opt)
    steps = max(1, round(d_opt / setup.tokens_per_step))
    n_real, d_real = non_embedding_params(d_model, n_layers), steps * setup.tokens_per_step
    return {"budget_flops": budget, "n_opt": n_opt, "d_opt": d_opt, "d_model": d_model, "n_layers": n_layers,
            "steps": steps, "predicted": float(fit.predict(n_real, d_real)),
            "interval_90": list(interval([b.predict(n_real, d_real) for b in boots]))}


def check_recommendation(runs: list[dict], setup: Setup, vocab_size: int, epoch_tokens: int) -> dict:
    """Train the shape the fit recommends for the check budget; inside: its val_loss within the interval."""
    budget = setup.check_flops or max(r["flops"] for r in runs) / 4
    rec = recommend(runs, budget, setup, vocab_size)
    command = f"python -m analysis.scaling_law --experiment scaling --budget-flops {budget:.3g}"
    if rec["steps"] * setup.tokens_per_step > epoch_tokens:  # a fit pinned at its smallest N asks for this
        return {**rec, "command": command, "inside": False, "skipped": "the recommended run exceeds one epoch"}
    measured = train_run(setup.overrides(rec["d_model"], rec["n_layers"], rec["steps"]))
    low, high = rec["interval_90"]
    return {**rec, "measured": measured["val_loss"], "flops": measured["flops"], "epochs": measured["epochs"],
            "rel_err": abs(rec["predicted"] - measured["val_loss"]) / measured["val_loss"],
            "inside": bool(low <= measured["val_loss"] <= high), "command": command}


def measure(setup: Setup = Setup(), figure: str | None = None) -> dict:
    for d_model, n_layers in setup.shapes:  # every run's config builds, or a ConfigError names the fix
        for steps in setup.budgets():
            build_config("cpu", setup.overrides(d_model, n_layers, steps))
    started = time.perf_counter()
    epoch_tokens, vocab_size = prepare(setup.overrides(*setup.shapes[0], 2))  # once, before the workers read it
    if max(setup.budgets()) * setup.tokens_per_step > epoch_tokens:
        raise ConfigError(f"the largest budget ({max(setup.budgets()) * setup.tokens_per_step:,} tokens) exceeds "
                          f"one epoch of {setup.data} ({epoch_tokens:,}); lower --tokens-per-param or use a larger "
                          "corpus")

    def progress(key, result):
        print(f"{key[0]}x{key[1]} {key[2]} steps: val_loss {result['val_loss']:.4f} "
              f"({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)

    results = run_adaptively(grid_plan(setup, vocab_size), setup.slots, train_run, progress)
    runs = [{**r, "d_model": d, "n_layers": n, "max_steps": s} for (d, n, s), r in sorted(results.items())]
    trained_s = time.perf_counter() - started
    result = evaluate_fit(runs, setup.holdout, setup.bootstraps, vocab_size, setup.context)
    fit, predictions = result["fit"], result["predictions"]
    if figure:
        flops = np.array([r["flops"] for r in runs])
        scaling_law_figures.save(scaling_law_figures.frontier(
            fit, result["boots"], (flops.min() / 3, flops.max() * 30), result["per_token"],
            [r["n_params_non_embedding"] for r in runs], [r["tokens"] for r in runs], flops), figure)
    n_max = max(r["n_params_non_embedding"] for r in runs)
    return {
        "max_rel_err": max(p["rel_err"] for p in predictions),
        "inside_interval": all(p["interval_90"][0] <= p["measured"] <= p["interval_90"][1] for p in predictions),
        "alpha": fit.alpha, "beta": fit.beta, "E": fit.E, "A": fit.A, "B": fit.B,
        "held_out": predictions, "runs": len(runs), "fitted_on": len(runs) - setup.holdout,
        "check": check_recommendation(runs, setup, vocab_size, epoch_tokens) if setup.check else None,
        "data": f"{setup.data}, {setup.tokenizer}, {epoch_tokens:,} training tokens",
        "epochs_max": max(r["epochs"] for r in runs),
        "tokens_per_param_max": max(r["tokens"] / r["n_params_non_embedding"] for r in runs),
        "tokens_per_param_largest": sorted(r["tokens"] / n_max for r in runs if r["n_params_non_embedding"] == n_max),
        "sizes_non_embedding": sorted({int(r["n_params_non_embedding"]) for r in runs}),
        "token_budgets": sorted({int(r["tokens"]) for r in runs}), "steps_min": int(min(r["steps"] for r in runs)),
        "total_flops": float(sum(r["flops"] for r in runs)), "total_device_s": sum(r["device_s"] for r in runs),
        "train_wall_s": trained_s, "wall_s": time.perf_counter() - started, "setup": dataclasses.asdict(setup),
        "machine": f"{os.cpu_count()} cores, {setup.slots} runs at a time", "runs_detail": runs,
    }


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


@exits_cleanly_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling_fit", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same steps on toy models and budgets: seconds")
    parser.add_argument("--data", help=f"corpus (default {Setup.data})")
    parser.add_argument("--tokenizer", help=f"default {Setup.tokenizer}")
    parser.add_argument("--tokens-per-param", type=_floats, help="token budgets as multiples of the largest N")
    parser.add_argument("--holdout", type=int, help="runs of largest compute to predict (default 3)")
    parser.add_argument("--bootstraps", type=int)
    parser.add_argument("--check-flops", type=float, help="the recommendation check's budget")
    parser.add_argument("--no-check", dest="check", action="store_false", default=None,
                        help="skip the recommendation check")
    parser.add_argument("--slots", type=int, help="runs at a time, one torch thread each (default 2)")
    parser.add_argument("--figure", default=None, help="write the frontier figure here (PNG)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    args = parser.parse_args(argv)
    chosen = {k: v for k, v in vars(args).items() if k in Setup.__dataclass_fields__ and v is not None}
    setup = dataclasses.replace(QUICK if args.quick else Setup(), **chosen)
    print(json.dumps(measure(setup, args.figure),
                     default=lambda v: v if not isinstance(v, float) or math.isfinite(v) else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
