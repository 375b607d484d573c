"""python -m benchmarks.sweep_overhead [--trials 8] [--train-seconds 20] [--slots 2] [--json]

How much of a sweep's wall clock the sweep machinery adds to the trials' own work. Runs a real sweep through the
shared runner (`run_sweep`: Ray Tune, fixed grid, FIFO scheduler, MLflow in a temporary SQLite file, fine-tuning
off) of `--trials` trials of the cpu preset on wikitext-2 with the GPT-2 tokenizer, each ~`--train-seconds` of
training (steps calibrated first) and one evaluation at the end (the whole validation split, as the preset does),
`--slots` at a time with one CPU and one torch thread each. Then:

    overhead_fraction      = 1 − (train_s_sum + eval_s_sum) / (wall_s × slots)
    non_training_fraction  = 1 − train_s_sum / (wall_s × slots)

train_s_sum adds each trial's seconds inside `train_step` (from its reports' tokens_per_s and steps) and eval_s_sum
its seconds evaluating (`eval_s`: validation loss and samples), see benchmarks/sweep_results.py; wall_s is the whole
`run_sweep` call (tokenization, Ray and MLflow start, trials, checkpoints, tracking, shutdown of the trials). So
overhead_fraction is what the sweep adds to a standalone run of the same trials, and non_training_fraction also
counts the trials' evaluation. `breakdown` splits the wall clock: before the first trial starts, inside trials
but outside training and evaluation (actor start, checkpoints, reports), slots left idle, after the last trial.

A second, small sweep on the same data then shows the token cache: its data preparation (`prepared_s`, as the
runner prints it) should be ~0 next to the first sweep's, which tokenizes into a fresh cache.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from benchmarks.common import emit, offline, shared_file, sweep_benchmark_parser
from benchmarks.sweep_results import SweepRun, run_sweep_captured
from sweeps.engine.plan import Dim
from trainer.config import DataConfig, build_config, with_vocab_size
from trainer.data import prepare_corpus
from trainer.loop import Pretrainer

CONFIG_NOTE = ("cpu preset, wikitext-2 test, GPT-2 tokenizer, grid over optim.lr, FIFO, fine-tuning off, "
               "1 CPU + 1 torch thread per trial")


def calibrate_step_seconds(argv_data: dict) -> float:
    """Seconds per training step of the trial config with one thread (median of 5, after 2 warm-up steps)."""
    cfg = build_config("cpu", {"train.threads": 1})
    corpus, tokenizer = prepare_corpus(DataConfig(**argv_data), cfg.model.context_length)
    trainer = Pretrainer(with_vocab_size(cfg, corpus.vocab_size), corpus, tokenizer)
    for _ in range(2):
        trainer.train_step()
    times = []
    for _ in range(5):
        started = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - started)
    torch.set_num_threads(os.cpu_count() or 1)
    return statistics.median(times)


def _grid(lrs: tuple, n_steps: int):
    """A fixed grid of learning rates, warmup a tenth of the run."""
    return lambda _cfg: {"optim.lr": Dim(None, grid=lrs), "optim.warmup_steps": Dim(None, grid=(n_steps // 10,))}


def _sweep_argv(work: Path, text: Path, tok: Path, slots: int, experiment: str, n_steps: int) -> list[str]:
    return ["--preset", "cpu", "--data", str(text), "--tokenizer", str(tok), "--finetune-train", "none",
            "--search", "grid", "--scheduler", "fifo", "--max-concurrent", str(slots),
            "--cpus-per-trial", "1", "--storage", str(work / "ray_results"),
            "--mlflow-uri", f"sqlite:///{work / 'mlflow.db'}", "--experiment", experiment,
            "--set", f"train.max_steps={n_steps}", "--set", f"optim.warmup_steps={n_steps // 10}"]


def overhead(first: SweepRun, slots: int) -> dict:
    """Where the first sweep's slot time went: training, evaluation, and the machinery around them."""
    train_s_sum, eval_s_sum = sum(t.train_s for t in first.trials), sum(t.eval_s for t in first.trials)
    slot_s = first.wall_s * slots
    before = min(t.started for t in first.trials) - first.started
    after = first.started + first.wall_s - max(t.ended for t in first.trials)
    in_trials = sum(t.ended - t.started - t.train_s - t.eval_s for t in first.trials)
    idle = slot_s - (before + after) * slots - sum(t.ended - t.started for t in first.trials)
    return {
        "train_s_per_trial": [round(t.train_s, 2) for t in first.trials],
        "eval_s_per_trial": [round(t.eval_s, 2) for t in first.trials],
        "wall_s": round(first.wall_s, 2), "train_s_sum": round(train_s_sum, 2), "eval_s_sum": round(eval_s_sum, 2),
        "overhead_fraction": round(1 - (train_s_sum + eval_s_sum) / slot_s, 3),
        "non_training_fraction": round(1 - train_s_sum / slot_s, 3),
        "breakdown_slot_s": {"before_first_trial": round(before * slots, 1),
                             "in_trials_outside_work": round(in_trials, 1), "idle_slots": round(idle, 1),
                             "after_last_trial": round(after * slots, 1)},
    }


def measure(trials: int = 8, train_seconds: float = 20.0, slots: int = 2, echo: bool = False) -> dict:
    """Two real sweeps (the second on the warm token cache) and the overhead of the first."""
    text, tok = shared_file("wikitext-2", "wiki.test.raw"), shared_file("gpt2_tokenizer")
    work = Path(tempfile.mkdtemp(prefix="sweep_overhead_"))
    # The step count is calibrated on a throwaway cache, then the first sweep tokenizes into a fresh one.
    offline(work / "calibration-cache")
    step_s = calibrate_step_seconds({"source": str(text), "tokenizer": str(tok)})
    os.environ["GPTSWEEP_CACHE_DIR"] = str(work / "cache")
    steps = max(10, round(train_seconds / step_s))
    cfg = build_config("cpu")
    tokens_per_step = cfg.train.batch_size * cfg.model.context_length
    lrs = tuple(round(1e-3 * (1 + i), 6) for i in range(trials))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    first = run_sweep_captured("sweep_overhead", _grid(lrs, steps), _sweep_argv(work, text, tok, slots, "overhead",
                               steps), uri, "overhead", tokens_per_step, echo)
    # The second sweep, on the same data: just enough trials and steps to read its data preparation time.
    second = run_sweep_captured("sweep_overhead", _grid(lrs[:slots], 10), _sweep_argv(
        work, text, tok, slots, "overhead_cached", 10), uri, "overhead_cached", tokens_per_step, echo)
    ray.shutdown()
    if first.rc or second.rc or not first.trials:
        raise SystemExit(f"a sweep failed (exit codes {first.rc}, {second.rc}):\n"
                         f"{first.output[-2000:]}{second.output[-2000:]}")
    return {"trials": len(first.trials), "slots": slots, "steps_per_trial": steps,
            "calibrated_step_s": round(step_s, 4), **overhead(first, slots),
            "first_sweep_prep_s": first.prepared_s, "second_sweep_prep_s": second.prepared_s,
            "second_sweep_wall_s": round(second.wall_s, 2), "sweep_rc": [first.rc, second.rc],
            "config": CONFIG_NOTE}


def main(argv: list[str] | None = None) -> dict:
    parser = sweep_benchmark_parser("python -m benchmarks.sweep_overhead")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--train-seconds", type=float, default=20.0, help="training time per trial")
    args = parser.parse_args(argv)
    return emit(measure(args.trials, args.train_seconds, args.slots, echo=not args.json), args.json)


if __name__ == "__main__":
    main()
