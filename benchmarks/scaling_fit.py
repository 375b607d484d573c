"""python -m benchmarks.scaling_fit --json [--steps 150,300,600] [--holdout 3] [--figure docs/scaling_frontier.png]

Does the scaling law predict runs it has not seen? Trains the scaling sweep's 5 model sizes (sweeps/scaling.py,
12.8k–396k non-embedding parameters) × 3 token budgets directly with trainer.loop.Pretrainer (no Ray, no
MLflow: two runs at a time, one torch thread each), on wikitext-2 from GPTSWEEP_DATA_DIR with a 1,024-token BPE
trained on it, cpu preset otherwise (batch 16 × context 64, dropout 0, each budget its own 10 % warmup + cosine,
lr ∝ 1/width: trainer/sizes.py). Fits L(N, D) = E + A/N^α + B/D^β on all but the `holdout` runs of largest
compute, predicts those, and prints one JSON object: max_rel_err (|predicted − measured| / measured val_loss),
inside_interval (every held-out run inside the 90 % bootstrap interval of its prediction), alpha, beta, and
tokens per parameter at the compute-optimal point for the largest run's FLOPs.
Data: the 54 training articles are 446,598 bpe:1024 tokens; the 600-step budget (614,400 tokens) repeats
them 1.4×: runs past one epoch see repeated data, which the fit cannot tell from fresh tokens.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from analysis import scaling_law_figures as scaling_figures
from analysis.scaling_law_fit import bootstrap, family_flops_per_token, fit_law, interval, optimal_allocation
from benchmarks.common import shared_file
from trainer.config import build_config
from trainer.config import build_config, with_vocab_size
from trainer.data import prepare_corpus
from trainer.loop import Pretrainer
from trainer.sizes import budget_params, size_params

SHAPES = ((32, 1), (48, 1), (64, 2), (96, 2), (128, 2))  # sweeps/scaling.py's (d_model, n_layers)
TOKENIZER = "bpe:1024"


def run_config(d_model: int, n_layers: int, max_steps: int) -> dict[str, object]:
    return {"data.source": str(shared_file("wikitext-2", "wiki.test.raw")), "data.tokenizer": TOKENIZER,
            "data.finetune_train": None, "model.dropout": 0.0, "train.threads": 1, "train.eval_batches": 40,
            "model.context_length": 64, "train.batch_size": 16,  # as measured, whatever the cpu preset becomes
            **size_params(d_model, n_layers), **budget_params(max_steps)}


def train_one(overrides: dict[str, object]) -> dict[str, float]:
    """One full run (a worker process); its last eval's metrics and its shape."""
    cfg = build_config("cpu", overrides)
    corpus, tokenizer = prepare_corpus(cfg.data, cfg.model.context_length)  # a cache hit after the first
    record = Pretrainer(with_vocab_size(cfg, corpus.vocab_size), corpus, tokenizer).run()
    m = record.metrics
    return {"d_model": cfg.model.d_model, "n_layers": cfg.model.n_layers, "max_steps": cfg.train.max_steps,
            "vocab_size": corpus.vocab_size, "context_length": cfg.model.context_length,
            **{k: float(m[k]) for k in ("val_loss", "tokens", "flops", "n_params_non_embedding", "n_params",
                                        "device_s", "wall_s")}}


def train_grid(steps: tuple[int, ...], workers: int) -> tuple[list[dict[str, float]], int]:
    """Every size × budget, and how many training tokens the corpus has (one epoch)."""
    jobs = [run_config(d, n, s) for d, n in SHAPES for s in steps]
    cfg = build_config("cpu", jobs[0])
    corpus, _ = prepare_corpus(cfg.data, cfg.model.context_length)  # tokenize once, before the workers read it
    # Dearest first, so the two workers finish together.
    jobs.sort(key=lambda o: -o["train.max_steps"] * o["model.d_model"] ** 2 * o["model.n_layers"])
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on a shared core
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(train_one, jobs)), len(corpus.train)


def evaluate_fit(runs: list[dict[str, float]], holdout: int, bootstraps: int, seed: int = 0) -> dict:
    n, d, loss, flops = (np.array([r[k] for r in runs]) for k in ("n_params_non_embedding", "tokens", "val_loss",
                                                                     "flops"))
    held = np.zeros(len(runs), bool)
    held[np.argsort(-flops)[:holdout]] = True
    fit, starts = fit_law(n[~held], d[~held], loss[~held])
    boots = bootstrap(n[~held], d[~held], loss[~held], starts, samples=bootstraps, seed=seed)
    predictions = []
    for i in np.flatnonzero(held):
        low, high = interval([b.predict(n[i], d[i]) for b in boots])
        predicted = float(fit.predict(n[i], d[i]))
        predictions.append({"d_model": runs[i]["d_model"], "n_layers": runs[i]["n_layers"],
                            "max_steps": runs[i]["max_steps"], "flops": float(flops[i]), "measured": float(loss[i]),
                            "predicted": predicted, "interval_90": [low, high],
                            "rel_err": abs(predicted - loss[i]) / loss[i]})
    aspect = float(np.median([r["d_model"] / r["n_layers"] for r in runs]))
    per_token = family_flops_per_token(int(runs[0]["vocab_size"]), int(runs[0]["context_length"]), aspect)
    n_opt, d_opt, l_opt = optimal_allocation(fit, float(flops.max()), per_token)
    return {"fit": fit, "boots": boots, "held": held, "per_token": per_token, "predictions": predictions,
            "optimum": {"flops": float(flops.max()), "n_opt": n_opt, "d_opt": d_opt, "loss": l_opt,
                        "tokens_per_parameter": d_opt / n_opt}}


def measure(steps: tuple[int, ...] = (150, 300, 600), holdout: int = 3, bootstraps: int = 200, workers: int = 2,
            figure: str | None = None) -> dict:
    started = time.perf_counter()
    runs, epoch_tokens = train_grid(steps, workers)
    trained_s = time.perf_counter() - started
    result = evaluate_fit(runs, holdout, bootstraps)
    fit, predictions = result["fit"], result["predictions"]
    if figure:
        flops = np.array([r["flops"] for r in runs])
        scaling_figures.save(scaling_figures.frontier(
            fit, result["boots"], (flops.min() / 3, flops.max() * 30), result["per_token"],
            [r["n_params_non_embedding"] for r in runs], [r["tokens"] for r in runs], flops), figure)
    return {
        "max_rel_err": max(p["rel_err"] for p in predictions),
        "inside_interval": all(p["interval_90"][0] <= p["measured"] <= p["interval_90"][1] for p in predictions),
        "alpha": fit.alpha, "beta": fit.beta, "E": fit.E, "A": fit.A, "B": fit.B,
        "tokens_per_parameter_at_optimum": result["optimum"]["tokens_per_parameter"], "optimum": result["optimum"],
        "held_out": predictions, "runs": len(runs), "fitted_on": len(runs) - holdout,
        "sizes_non_embedding": sorted({int(r["n_params_non_embedding"]) for r in runs}),
        "token_budgets": sorted({int(r["tokens"]) for r in runs}),
        "train_tokens_per_epoch": epoch_tokens, "total_flops": float(sum(r["flops"] for r in runs)),
        "total_device_s": sum(r["device_s"] for r in runs), "train_wall_s": trained_s,
        "wall_s": time.perf_counter() - started, "machine": f"{os.cpu_count()} cores, {workers} runs at a time",
        "runs_detail": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling_fit")
    parser.add_argument("--steps", default="150,300,600", help="token budgets as train.max_steps")
    parser.add_argument("--holdout", type=int, default=3, help="runs of largest compute to predict")
    parser.add_argument("--bootstraps", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--figure", default=None, help="write the frontier figure here (PNG)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    args = parser.parse_args(argv)
    steps = tuple(int(s) for s in args.steps.split(","))
    print(json.dumps(measure(steps, args.holdout, args.bootstraps, args.workers, args.figure),
                     default=lambda v: v if not isinstance(v, float) or math.isfinite(v) else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
