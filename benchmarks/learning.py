"""python -m benchmarks.learning --json [--budgets 600,1200,1800] [--corpora wiki,gutenberg] [--slots 2]

What the cpu preset learns for its budget: for each corpus and each budget in optimizer steps, one pre-training
run of the cpu preset (its model, tokenizer, batch and lr; warmup a tenth of the run, then cosine to its own last
step; one thread per run, `--slots` runs at a time, as in a sweep), scored at its end on the held-out documents.
Prints one JSON object: per run val_bpb, the corpus's bigram floor in bits per byte (trainer/floors.py) and their
ratio (below 1: the model knows more than pair counts), the epochs of the training split it saw, and its CPU
seconds; plus the machine (CPU model, whether it has native bf16) and the precision `auto` chose.

wiki: the shared WikiText-2 test split (54 articles train, 6 held out: 311k bpe:4096 tokens, which the preset's
model overfits after about two epochs). gutenberg: 99 public-domain books (about 19.5M tokens; the last tenth of
the books held out), which no budget here repeats.
"""
from __future__ import annotations

import argparse
import multiprocessing
import platform
import time

import torch

from benchmarks.common import emit, offline, shared_file
from trainer.config import build_config, with_vocab_size
from trainer.data import prepare_corpus
from trainer.floors import loss_floors
from trainer.loop import Pretrainer
from trainer.precision import native_bf16, resolve_precision

CORPORA = {"wiki": ("wikitext-2", "wiki.test.raw"), "gutenberg": ("gutenberg", None)}


def corpus_path(name: str) -> str:
    folder, file = CORPORA[name]
    return str(shared_file(folder, file))


def overrides(source: str, steps: int) -> dict[str, object]:
    return {"data.source": source, "train.max_steps": steps, "optim.warmup_steps": max(1, steps // 10),
            "train.eval_every": steps, "train.threads": 1}


def run_one(job: tuple[str, str, int]) -> dict:
    """One run of the cpu preset for `steps` steps on a corpus whose tokens are already cached."""
    name, source, steps = job
    cfg = build_config("cpu", overrides(source, steps))
    corpus, tokenizer = prepare_corpus(cfg.data, cfg.model.context_length)
    cfg = with_vocab_size(cfg, corpus.vocab_size)
    floors = loss_floors(corpus.train, corpus.val, corpus.vocab_size, tokenizer.token_bytes())
    trainer = Pretrainer(cfg, corpus, tokenizer)
    started = time.process_time()
    metrics = trainer.run().metrics
    tokens = steps * cfg.train.batch_size * cfg.model.context_length
    return {"corpus": name, "steps": steps, "tokens": tokens, "epochs": round(tokens / len(corpus.train), 2),
            "val_bpb": round(metrics["val_bpb"], 4), "floor_bigram_bpb": round(floors["floor_bigram_bpb"], 4),
            "ratio_to_bigram": round(metrics["val_bpb"] / floors["floor_bigram_bpb"], 4),
            "train_tokens": len(corpus.train), "cpu_s": round(time.process_time() - started, 1)}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor()) if platform.system() == "Linux" else platform.processor()
    cpu = torch.device("cpu")
    dtype = resolve_precision(build_config("cpu").train.precision, cpu)
    return {"cpu": model, "native_bf16": native_bf16(cpu), "precision": str(dtype or "fp32")}


def measure(budgets=(600, 1200, 1800), corpora=("wiki", "gutenberg"), slots: int = 2) -> dict:
    offline()
    sources = {name: corpus_path(name) for name in corpora}
    for source in sources.values():  # tokenize once here, so the parallel runs only read the cache
        prepare_corpus(build_config("cpu", {"data.source": source}).data, 128)
    jobs = [(name, source, steps) for name, source in sources.items() for steps in budgets]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(slots) as pool:
        runs = pool.map(run_one, jobs, chunksize=1)
    return {"runs": runs, "slots": slots, "wall_s": round(time.perf_counter() - started), **machine(),
            "config": "cpu preset (2 layers x 128, context 128, batch 8, bpe:4096, lr 3e-3), warmup steps/10, "
                      "cosine to lr/10 at the run's end, one eval at the end on 40 x 16 held-out windows"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning")
    parser.add_argument("--budgets", default="600,1200,1800", help="optimizer steps per run, comma-separated")
    parser.add_argument("--corpora", default="wiki,gutenberg", help=f"comma-separated: {', '.join(CORPORA)}")
    parser.add_argument("--slots", type=int, default=2, help="runs at a time (one CPU thread each)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    budgets = tuple(int(b) for b in args.budgets.split(","))
    corpora = tuple(c for c in args.corpora.split(",") if c)
    unknown = [c for c in corpora if c not in CORPORA]
    if unknown:
        parser.error(f"unknown corpus {unknown[0]!r}; choose from {', '.join(CORPORA)}")
    return emit(measure(budgets, corpora, args.slots), args.json)


if __name__ == "__main__":
    main()
