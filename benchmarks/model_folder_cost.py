"""What a completed trial's model folder costs: its size and the seconds to write it, copy it into the sweep's
storage (as Tune does with the last checkpoint) and log it to MLflow, for the cpu and seed presets' models.

    python -m benchmarks.model_folder_cost --json

The cpu preset's model uses bpe:4096 trained on wikitext-2 (GPTSWEEP_DATA_DIR), the seed preset's GPT-2's
tokenizer; the weights are a fresh model's (the size and the time do not depend on their values). MLflow is a
SQLite store with local artifacts, as a sweep's default. Each time is the median of `repeats`.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit, offline
from trainer.config import build_config, with_vocab_size
from trainer.data import prepare_corpus
from trainer.model import GPT
from trainer.model_folder import load_model_folder, save_model_folder
from trainer.telemetry import disable_telemetry


def _median_s(action, repeats: int) -> float:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        action(i)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


def measure_preset(preset: str, root: Path, client, experiment_id: str, repeats: int) -> dict:
    cfg = build_config(preset, {"data.source": "wikitext-2"})
    _, tokenizer = prepare_corpus(cfg.data, cfg.model.context_length)
    cfg = with_vocab_size(cfg, tokenizer.vocab_size)
    model = GPT(cfg.model)
    folder = lambda i: root / preset / f"trial{i}" / "model"
    save_s = _median_s(lambda i: save_model_folder(folder(i), model, cfg, tokenizer), repeats)
    copy_s = _median_s(lambda i: shutil.copytree(folder(i), root / preset / f"storage{i}"), repeats)
    run_id = client.create_run(experiment_id, run_name=preset).info.run_id
    log_s = _median_s(lambda i: client.log_artifacts(run_id, str(folder(i)), f"model{i}"), repeats)
    load_s = _median_s(lambda i: load_model_folder(folder(i)), repeats)
    files = {p.name: p.stat().st_size for p in folder(0).iterdir()}
    return {"preset": preset, "tokenizer": cfg.data.tokenizer, "n_params": model.num_parameters(),
            "bytes": sum(files.values()), "files": files, "save_s": save_s, "copy_to_storage_s": copy_s,
            "mlflow_log_s": log_s, "per_trial_s": round(save_s + copy_s + log_s, 4), "load_s": load_s}


def measure(repeats: int = 3) -> dict:
    disable_telemetry()
    offline()
    from mlflow.tracking import MlflowClient  # after the telemetry switches

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
        experiment_id = client.create_experiment("model_folder", artifact_location=(root / "artifacts").as_uri())
        return {"presets": [measure_preset(p, root, client, experiment_id, repeats) for p in ("cpu", "seed")],
                "repeats": repeats}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_folder_cost")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    return emit(measure(args.repeats), args.json)


if __name__ == "__main__":
    main()
