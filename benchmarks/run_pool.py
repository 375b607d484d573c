"""Training runs in parallel slots for the benchmarks that train many small models (mup_transfer, scaling_fit).

    python -m benchmarks.mup_transfer --quick      (uses it: one process per slot, one torch thread each)

`train_run` is one run of a preset (the cpu one unless told) plus overrides, trained directly with
trainer.loop.Pretrainer (no Ray, no MLflow); `run_adaptively` keeps `slots` runs going and asks the caller what to
train next whenever one finishes, so a search can extend itself (an lr line past its edge) without idling a slot
until a whole round is done.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Hashable

# Which runs to start, given the finished ones (key → train_run's result) and the keys still running.
Planner = Callable[[dict, set], dict[Hashable, dict[str, object]]]


def train_run(overrides: dict[str, object], preset: str = "cpu") -> dict[str, float]:
    """One run's last eval: val_loss (NaN where it diverged), the ledger, and the share of an epoch it trained."""
    from trainer.config import build_config, with_vocab_size
    from trainer.data import prepare_corpus
    from trainer.loop import Pretrainer

    cfg = build_config(preset, overrides)
    corpus, tokenizer = prepare_corpus(cfg.data, cfg.model.context_length)  # a cache hit: the parent built it
    trainer = Pretrainer(with_vocab_size(cfg, corpus.vocab_size), corpus, tokenizer)
    trainer.sample = lambda *a, **k: []  # samples are not measured here: skip their generation steps
    m = trainer.run().metrics
    return {"val_loss": math.nan if m.get("diverged") else float(m["val_loss"]),
            "val_bpb": math.nan if m.get("diverged") else float(m.get("val_bpb", math.nan)),
            "steps": float(m["step"]), "epochs": float(m["tokens"]) / len(corpus.train),
            **{k: float(m[k]) for k in ("tokens", "flops", "n_params", "n_params_non_embedding", "device_s", "wall_s")}}


def prepare(overrides: dict[str, object], preset: str = "cpu") -> tuple[int, int]:
    """Tokenize (or find in the cache) the corpus the runs will read, once, before any worker starts; returns the
    training split's tokens (one epoch) and the vocabulary size."""
    from trainer.config import build_config
    from trainer.data import prepare_corpus

    cfg = build_config(preset, overrides)
    corpus, _ = prepare_corpus(cfg.data, cfg.model.context_length)
    return len(corpus.train), corpus.vocab_size


def run_adaptively(plan: Planner, slots: int, train: Callable = train_run,
                   progress: Callable[[Hashable, dict], None] | None = None) -> dict:
    """Train what `plan` asks for, `slots` runs at a time, until it asks for nothing and nothing runs; returns
    key → result. `plan` is called after every finished run; it must not ask again for a key it has seen."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on a shared core
    results, running = {}, {}
    with ProcessPoolExecutor(max_workers=slots) as pool:
        while True:
            for key, overrides in plan(dict(results), set(running.values())).items():
                if key in results or key in running.values():
                    raise ValueError(f"the plan asked twice for {key!r}")
                running[pool.submit(train, overrides)] = key
            if not running:
                return results
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                key = running.pop(future)
                results[key] = future.result()
                if progress is not None:
                    progress(key, results[key])
