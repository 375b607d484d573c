"""python -m benchmarks.asha_savings [--steps 256] [--vocab 2048] [--json]

What ASHA saves on the seed's question. The lr × warmup grid of sweeps/lr_warmup.py (3 learning rates × warmups
of 0, 5 % and 25 % of the run: 9 trials) runs twice through the shared runner, once at full budget (FIFO) and
once under ASHA as the runner sets it up (grace period a quarter of the run, reduction factor 2, rungs checked at
each eval: every 16 steps), two trials at a time on one CPU each, fine-tuning off. Prints the training steps each
sweep spent (the sum of the trials' last steps), their ratio, and the gap between their best validation
perplexities. Targets: ASHA ≤ 30 % of the grid's steps with a best val_ppl within 3 %.

`replay` then replays Tune's ASHA rule on the grid's recorded curves for other grace periods and reduction
factors, in the grid's order and in 200 shuffled orders (benchmarks/asha_replay.py): what any setting would have spent and
found on this grid. `replayed_asha_steps` is the replay of the setting the ASHA sweep ran; it should equal
`asha_steps`.

The config is small but real so that both sweeps finish in a few minutes on 2 cores: wikitext-2 (the shared
test split, 60 articles: 54 train, 6 held out) with a byte-level BPE of `--vocab` tokens trained on it, and the
smoke preset widened to 2 layers × 64 wide × 4 heads, context 64, batch 16, `--steps` steps, no dropout,
validation on 20 batches (20,480 tokens).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import ray

from benchmarks.asha_replay import replay, replay_table
from benchmarks.common import emit, offline, shared_file, sweep_benchmark_parser
from benchmarks.sweep_results import SweepRun, run_sweep_captured
from sweeps.engine.plan import REDUCTION_FACTOR, grace_steps
from sweeps.lr_warmup import space
from trainer.result_schema import best_of

REPLAYED = [(4, 2), (16, 2), (32, 2), (32, 4), (64, 2), (64, 3), (128, 2)]  # (grace steps, reduction factor)

MODEL = {"model.n_layers": 2, "model.d_model": 64, "model.n_heads": 4, "model.context_length": 64,
         "model.dropout": 0.0, "train.batch_size": 16, "train.eval_every": 16, "train.eval_batches": 20}


def _grid_sweep(scheduler: str, work: Path, steps: int, vocab: int, slots: int, echo: bool) -> SweepRun:
    """The lr × warmup grid of sweeps/lr_warmup.py under `scheduler`, recorded in work/mlflow.db."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    sets = [a for k, v in {**MODEL, "train.max_steps": steps}.items() for a in ("--set", f"{k}={v}")]
    argv = ["--preset", "smoke", "--data", str(shared_file("wikitext-2", "wiki.test.raw")),
            "--tokenizer", f"bpe:{vocab}", "--finetune-train", "none", "--search", "grid", "--scheduler", scheduler,
            "--max-concurrent", str(slots), "--cpus-per-trial", "1", "--storage", str(work / "ray_results"),
            "--mlflow-uri", uri, "--experiment", scheduler, *sets]
    return run_sweep_captured("asha_savings", space, argv, uri, scheduler,
                              tokens_per_step=MODEL["train.batch_size"] * MODEL["model.context_length"], echo=echo)


def _trial_table(run: SweepRun) -> list[dict]:
    return sorted(({"lr": float(t.config["optim.lr"]), "warmup": int(t.config["optim.warmup_steps"]),
                    "steps": t.steps, "val_ppl": round(t.val_ppl, 2)} for t in run.trials),
                  key=lambda r: (r["lr"], r["warmup"]))


def measure(steps: int = 256, vocab: int = 2048, slots: int = 2, echo: bool = False) -> dict:
    """The grid at full budget (FIFO) and under ASHA, then ASHA replayed on the grid's curves."""
    work = Path(tempfile.mkdtemp(prefix="asha_savings_"))
    offline(work / "cache")
    full, asha = (_grid_sweep(s, work, steps, vocab, slots, echo) for s in ("fifo", "asha"))
    ray.shutdown()
    if full.rc or asha.rc or not full.trials or not asha.trials:
        raise SystemExit(f"a sweep failed (exit codes {full.rc}, {asha.rc}):\n"
                         f"{full.output[-2000:]}{asha.output[-2000:]}")
    steps_full, steps_asha = sum(t.steps for t in full.trials), sum(t.steps for t in asha.trials)
    best_full, best_asha = (best_of(r.trials, lambda t: t.outcome, lambda t: t.val_ppl).val_ppl for r in (full, asha))
    grace = grace_steps(steps)  # as the sweep set up ASHA
    curves = [t.val_loss for t in full.trials]
    replayed_steps, _ = replay(curves, grace, REDUCTION_FACTOR, slots)
    return {
        "trials": len(full.trials), "max_steps": steps,
        "fifo_steps": steps_full, "asha_steps": steps_asha, "steps_ratio": round(steps_asha / steps_full, 3),
        "fifo_best_val_ppl": round(best_full, 2), "asha_best_val_ppl": round(best_asha, 2),
        "best_val_ppl_gap": round(best_asha / best_full - 1, 4),
        "fifo_wall_s": round(full.wall_s, 1), "asha_wall_s": round(asha.wall_s, 1),
        "fifo_train_s": round(sum(t.train_s for t in full.trials), 1),
        "asha_train_s": round(sum(t.train_s for t in asha.trials), 1),
        "asha_grace_steps": grace, "replayed_asha_steps": sum(replayed_steps),
        "fifo_trials": _trial_table(full), "asha_trials": _trial_table(asha),
        "replay": replay_table(curves, REPLAYED, slots),
        "config": f"smoke preset + {MODEL}, train.max_steps={steps}, wikitext-2 test split, bpe:{vocab}, grid of "
                  f"sweeps/lr_warmup.py, ASHA grace {grace} steps (rungs at reports every 16), reduction factor "
                  f"{REDUCTION_FACTOR}",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = sweep_benchmark_parser("python -m benchmarks.asha_savings")
    parser.add_argument("--steps", type=int, default=256, help="full budget per trial (train.max_steps)")
    parser.add_argument("--vocab", type=int, default=2048, help="BPE vocabulary trained on the corpus")
    args = parser.parse_args(argv)
    return emit(measure(args.steps, args.vocab, args.slots, echo=not args.json), args.json)


if __name__ == "__main__":
    main()
