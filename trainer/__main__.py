"""One training run, no Ray: pre-train, evaluate, optionally fine-tune on AG News, write metrics.json.

    python -m trainer --preset cpu --data wikitext-2 --tokenizer gpt2 \
        --finetune-train ag_news --out runs/single

Writes OUT/config.json (the flattened config), OUT/metrics.json (final values under the metric names
train_loss, val_loss, val_ppl, val_bpb, val_acc, lr, tokens_per_s, finetune_acc, finetune_acc_fewshot, and the
corpus's floors floor_{uniform,unigram,bigram} in nats per token and as *_bpb in bits per byte),
OUT/history.json (the metrics of every eval), OUT/samples.txt (completions at the last eval) and OUT/model/, the
trained model (trainer/model_folder.py; not for a diverged run, nor with --set train.save_model=false).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from trainer.cli import (ArgumentParser, add_config_args, check_writable_folder, config_from_args,
                         exits_cleanly_on_bad_input)
from trainer.config import flatten, with_vocab_size
from trainer.data import prepare_corpus, prepare_finetune
from trainer.finetune import finetune_metrics
from trainer.floors import loss_floors
from trainer.loop import Pretrainer
from trainer.model_folder import MODEL_DIR, save_model_folder
from trainer.telemetry import disable_telemetry


@exits_cleanly_on_bad_input
def main(argv: list[str] | None = None) -> int:
    disable_telemetry()
    parser = ArgumentParser(prog="python -m trainer", description=__doc__.split("\n")[0])
    add_config_args(parser, finetune_default=None)
    parser.add_argument("--out", required=True, help="folder for config.json, metrics.json and model/")
    args = parser.parse_args(argv)
    preset, cfg = config_from_args(args)
    out = Path(args.out).resolve()
    check_writable_folder(out, "--out")  # before training: its results have nowhere else to go

    started = time.perf_counter()
    corpus, tokenizer = prepare_corpus(cfg.data, cfg.model.context_length)
    print(corpus.summary, flush=True)
    cfg = with_vocab_size(cfg, corpus.vocab_size)
    finetune_data = prepare_finetune(cfg.data, tokenizer, cfg.finetune.max_length)
    trainer = Pretrainer(cfg, corpus, tokenizer)
    print(f"preset {preset}: {trainer.model.num_parameters() / 1e6:.2f}M parameters on {trainer.device}, "
          f"autocast {trainer.autocast_dtype or 'off (fp32)'}", flush=True)
    record = trainer.run(progress=True)
    metrics = {**record.metrics, **loss_floors(corpus.train, corpus.val, corpus.vocab_size, tokenizer.token_bytes())}
    if finetune_data is not None and not metrics.get("diverged"):
        print(f"fine-tuning on {len(finetune_data.train_labels)} rows "
              f"(few-shot: {cfg.finetune.fewshot_n}), scoring {len(finetune_data.test_labels)} test rows", flush=True)
        metrics.update(finetune_metrics(trainer.model, finetune_data, cfg.finetune, cfg.train.seed, trainer.autocast))

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(flatten(cfg), indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "history.json").write_text(json.dumps(trainer.history, indent=2) + "\n")  # every eval's metrics
    (out / "samples.txt").write_text("\n\n".join(record.samples) + "\n")
    if cfg.train.save_model and not metrics.get("diverged"):
        save_model_folder(out / MODEL_DIR, trainer.model, cfg, tokenizer)
    shown = " ".join(f"{k}={metrics[k]:.4g}" for k in ("val_loss", "val_ppl", "val_bpb", "floor_bigram_bpb",
                                                        "val_acc", "tokens_per_s",
                                                        "finetune_acc", "finetune_acc_fewshot") if k in metrics)
    print(f"done in {time.perf_counter() - started:.0f}s: {shown}\nwrote {out}/metrics.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
