"""python -m benchmarks.gpu --json        (this module is its second half: trials packed on one GPU)

k concurrent trials of one config on one GPU, scheduled by real Ray with fractional GPUs (num_gpus = 1/k each,
one CPU each, as a sweep reserves them), each its own worker process running `Pretrainer.train_step`. Every trial
warms up, waits at a barrier until all k have, then times a fixed number of steps. Per k: total tokens/s (all
trials' tokens over the span from the first start to the last end), the trials' own tokens/s, and peak memory
(each trial's CUDA allocator peak, and the device's used memory as the trials saw it at their end, CUDA contexts
included). `recommend` reads off the k where adding trials stops paying.
"""
from __future__ import annotations

import asyncio
import logging
import os
import statistics
import time
from pathlib import Path

import ray
import torch

from benchmarks.throughput import sync
from trainer.config import build_config, with_vocab_size
from trainer.loop import Pretrainer

REPO = Path(__file__).resolve().parents[1]
TRIAL_TIMEOUT_S = 180
GROWTH = 1.10  # a doubling of k must add at least 10 % total throughput to be worth its memory and latency


def recommend(per_k: list[dict]) -> int:
    """The k up to which each step to the next k grew total tokens/s by ≥ 10 % (runs that failed end the climb)."""
    best = per_k[0]
    for entry in per_k[1:]:
        if entry.get("error") or entry["total_tokens_per_s"] < GROWTH * best["total_tokens_per_s"]:
            break
        best = entry
    return best["k"]


def _gib(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / 2**30, 3)


def _barrier_class():
    @ray.remote(num_cpus=0)
    class Barrier:
        """All parties' wait() return together, once the last one has called it."""

        def __init__(self, parties: int):
            self.parties, self.arrived = parties, 0

        async def wait(self) -> None:
            self.arrived += 1
            while self.arrived < self.parties:
                await asyncio.sleep(0.002)

    return Barrier


def packed_trial(cfg_overrides: dict, preset: str, corpus, warmup: int, steps: int, barrier) -> dict:
    """One trial inside its Ray worker: build, warm up, meet the others, time `steps` steps."""
    trainer = Pretrainer(with_vocab_size(build_config(preset, cfg_overrides), corpus.vocab_size), corpus, tokenizer=None)
    device = trainer.device
    for _ in range(warmup):
        trainer.train_step()
    sync(device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    ray.get(barrier.wait.remote())
    started = time.time()
    for _ in range(steps):
        trainer.train_step()
    sync(device)
    ended = time.time()
    free, total = torch.cuda.mem_get_info(device) if on_gpu else (None, None)
    return {"start": started, "end": ended, "device": str(device),
            "tokens": steps * trainer.cfg.train.batch_size * trainer.cfg.model.context_length,
            "peak_allocated": torch.cuda.max_memory_allocated(device) if on_gpu else None,
            "peak_reserved": torch.cuda.max_memory_reserved(device) if on_gpu else None,
            "device_used": None if total is None else total - free}


def _one_k(run, k: int, cfg_overrides: dict, preset: str, corpus_ref, warmup: int, steps: int) -> dict:
    barrier = _barrier_class().remote(k)
    task = run.options(num_gpus=1 / k)
    # A bound, so that a k that hangs (a worker stuck starting, say) costs a GPU session minutes, not its run.
    trials = ray.get([task.remote(cfg_overrides, preset, corpus_ref, warmup, steps, barrier) for _ in range(k)],
                     timeout=TRIAL_TIMEOUT_S)
    ray.kill(barrier)
    span = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    own = [t["tokens"] / (t["end"] - t["start"]) for t in trials]
    def largest(key: str) -> float | None:  # None on CPU (the tests), where there is no device memory to read
        values = [t[key] for t in trials if t[key] is not None]
        return _gib(max(values)) if values else None

    return {"k": k, "gpus_per_trial": round(1 / k, 4), "total_tokens_per_s": round(sum(t["tokens"] for t in trials)
                                                                                   / span, 1),
            "per_trial_tokens_per_s": round(statistics.median(own), 1),
            "per_trial_tokens_per_s_min_max": [round(min(own), 1), round(max(own), 1)],
            "peak_memory_per_trial_gib": largest("peak_reserved"),
            "peak_allocated_per_trial_gib": largest("peak_allocated"),
            "device_memory_used_gib": largest("device_used"),
            "trial_devices": sorted({t["device"] for t in trials})}


def measure_packing(corpus, preset: str, cfg_overrides: dict, ks: tuple[int, ...], warmup: int,
                    steps: int) -> dict:
    """Total and per-trial tokens/s and peak memory for each k trials sharing one GPU (a Ray GPU resource: a
    logical one where no GPU exists, so this also runs, as a test, on CPU)."""
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, max(ks)), num_gpus=1, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}})
    try:
        # A fresh process per trial (max_calls=1): each k starts from empty GPU memory, like new sweep trials.
        run = ray.remote(num_cpus=1, max_calls=1)(packed_trial)
        corpus_ref = ray.put(corpus)
        per_k = []
        for k in ks:
            started = time.perf_counter()
            try:
                entry = _one_k(run, k, cfg_overrides, preset, corpus_ref, warmup, steps)
            except Exception as error:  # e.g. out of GPU memory at large k: the figures so far still stand
                entry = {"k": k, "error": f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}"}
            entry["wall_s"] = round(time.perf_counter() - started, 1)
            per_k.append(entry)
            if entry.get("error"):
                break
    finally:
        ray.shutdown()
    k = None if per_k[0].get("error") else recommend(per_k)
    return {"steps_per_trial": steps, "warmup_steps": warmup, "per_k": per_k, "recommended_k": k,
            "recommended_gpus_per_trial": None if k is None else round(1 / k, 4),
            "rule": f"the largest k reached while each step up in k grew total tokens/s by >= {GROWTH - 1:.0%}"}
