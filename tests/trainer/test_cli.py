"""pytest tests/trainer/test_cli.py — both command lines as a user runs them: bad input and offline hub names get
one `error:` line, exit code 2, before Ray or MLflow is imported and before anything is written; the trainer's
happy path writes what its docstring promises.

    pytest tests/trainer/test_cli.py -k "sweep and label"      # one row of the table, for the sweep CLI
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import SWEEP, make_tiny_documents
from trainer.config import gpu_count

TRAINER = [sys.executable, "-m", "trainer"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Good and bad data files, outside the folder the commands run in."""
    root = tmp_path_factory.mktemp("cli-inputs")
    docs = make_tiny_documents()
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    (root / "empty.txt").write_text("\n\n  \n")
    (root / "short.txt").write_text("A cat.\n\nA dog.\n")  # two documents of a few tokens: less than a window
    (root / "binary.txt").write_bytes(b"\xff\xfe\x00\x81 not utf-8 \xc3\x28")
    (root / "empty-data-dir").mkdir()  # GPTSWEEP_DATA_DIR with no local copies

    def table(name: str, header: list[str] | None, rows: list[tuple]) -> None:
        with open(root / name, "w", newline="") as f:
            writer = csv.writer(f)
            if header:
                writer.writerow(header)
            writer.writerows(rows)

    table("news.csv", ["text", "label"], [(t, i % 4) for i, t in enumerate(docs[:20])])
    table("label4.csv", ["text", "label"], [("fine", 0), ("out of range", 4)])  # 0-3 layout with a 4
    table("agnews5.csv", None, [(1, "title", "desc"), (5, "title", "desc")])  # original 1-4 layout with a 5
    table("nolabel.csv", ["text", "category"], [("a", 0), ("b", 1)])
    return root


# (id, flags, the stderr line must contain, which CLIs: t = python -m trainer, s = python sweeps/lr_warmup.py)
CASES = [
    ("missing-data-file", ["--data", "{in}/missing.txt"], "does not exist", "ts"),
    ("unreadable-data-file", ["--data", "{in}/binary.txt"], "cannot read", "ts"),
    ("empty-corpus", ["--data", "{in}/empty.txt"], "holds no text", "ts"),
    ("corpus-shorter-than-a-window", ["--data", "{in}/short.txt"], "fewer than one context window", "ts"),
    ("unknown-dataset", ["--data", "wikitext-3"], "unknown dataset 'wikitext-3'", "ts"),
    ("unknown-preset", ["--preset", "tiny"], "unknown preset 'tiny'", "ts"),
    ("set-unknown-field", ["--set", "optim.lrr=1e-3"], "unknown config field 'optim.lrr'", "ts"),
    ("set-wrong-type", ["--set", "train.max_steps=many"], "expected an integer", "ts"),
    ("set-not-key-value", ["--set", "optim.lr"], "not of the form section.field=value", "ts"),
    ("d-model-not-divisible", ["--set", "model.d_model=33"], "not divisible by model.n_heads", "ts"),
    ("zero-heads", ["--set", "model.n_heads=0"], "must all be > 0", "ts"),
    ("lr-zero", ["--set", "optim.lr=0"], "optim.lr=0.0 must be a finite number > 0", "ts"),
    ("lr-negative", ["--set", "optim.lr=-1e-3"], "must be a finite number > 0", "ts"),
    ("min-lr-ratio-above-1", ["--set", "optim.min_lr_ratio=2"], "optim.min_lr_ratio=2.0", "ts"),
    ("warmup-longer-than-run", ["--set", "optim.warmup_steps=100"], "optim.warmup_steps=100", "ts"),
    ("batch-size-zero", ["--set", "train.batch_size=0"], "train.batch_size=0 must be > 0", "ts"),
    ("bpe-size-not-a-number", ["--tokenizer", "bpe:many"], "bpe:N must be an integer", "ts"),
    ("ag-news-label-outside-0-3", ["--finetune-train", "{in}/label4.csv", "--finetune-test", "{in}/news.csv"],
     "label '4' in row 2 is not one of 0-3", "ts"),
    ("ag-news-label-outside-1-4", ["--finetune-train", "{in}/agnews5.csv", "--finetune-test", "{in}/news.csv"],
     "label '5' in row 2 is not one of 1-4", "ts"),
    ("ag-news-missing-column", ["--finetune-train", "{in}/nolabel.csv", "--finetune-test", "{in}/news.csv"],
     "has no 'label' column", "ts"),
    ("finetune-file-missing", ["--finetune-train", "{in}/news.csv", "--finetune-test", "{in}/nope.csv"],
     "does not exist", "ts"),
    ("unknown-flag", ["--learning-rate", "1e-3"], "unrecognized arguments: --learning-rate", "ts"),
    # offline: no network (HF_HUB_OFFLINE=1) and no local copy in GPTSWEEP_DATA_DIR
    ("offline-hub-dataset", ["--data", "wikitext-2"], "GPTSWEEP_DATA_DIR", "ts"),
    ("offline-gpt2-tokenizer", ["--tokenizer", "gpt2"], "GPTSWEEP_DATA_DIR", "ts"),
    ("offline-ag-news", ["--finetune-train", "ag_news"], "GPTSWEEP_DATA_DIR", "ts"),
    # sweep flags
    ("num-samples-not-an-integer", ["--num-samples", "four"], "argument --num-samples: invalid int value", "s"),
    ("num-samples-zero", ["--num-samples", "0"], "--num-samples 0 must be at least 1", "s"),
    ("gpus-per-trial-not-a-number", ["--gpus-per-trial", "half"], "--gpus-per-trial 'half' is not a number", "s"),
    ("gpus-per-trial-nan", ["--gpus-per-trial", "nan"], "is not a number", "s"),
    ("more-gpus-than-the-machine", ["--gpus-per-trial", "64"], "--gpus-per-trial 64 but this machine has", "s"),
    ("cpus-per-trial-zero", ["--cpus-per-trial", "0"], "--cpus-per-trial 0 must be > 0", "s"),
    ("max-concurrent-zero", ["--max-concurrent", "0"], "--max-concurrent 0 must be at least 1", "s"),
    ("unknown-search", ["--search", "bayes"], "argument --search: invalid choice: 'bayes'", "s"),
    ("resume-without-a-sweep", ["--resume"], "--resume: no sweep of experiment 'lr_warmup'", "s"),
    ("trainer-without-out", ["--no-out"], "the following arguments are required: --out", "t"),
    ("device-unknown", ["--set", "train.device=tpu"], "train.device='tpu': use auto, cpu, cuda or cuda:N", "ts"),
    ("device-beyond-the-machine", ["--set", "train.device=cuda:64"], "train.device=cuda:64 but this machine has",
     "ts"),
    # the same flags mean something else where CUDA is present: each machine checks its own case
    *([("device-cuda-without-cuda", ["--set", "train.device=cuda"], "train.device=cuda but this machine has 0",
        "ts")] if not gpu_count() else
      [("device-cuda-without-gpus-per-trial", ["--gpus-per-trial", "0", "--set", "train.device=cuda"],
        "train.device=cuda needs a GPU per trial, but --gpus-per-trial is 0", "s")]),
]
PARAMS = [pytest.param(cli, flags, expected, id=f"{'trainer' if cli == 't' else 'sweep'}-{name}")
          for name, flags, expected, clis in CASES for cli in clis]


def run_cli(cli: str, flags: list[str], inputs: Path, cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess,
                                                                                      set[str]]:
    """Run one CLI on the smoke preset and the tiny corpus (no fine-tuning) unless `flags` say otherwise; return
    the finished process (stderr without -X importtime's lines) and the top-level packages it imported."""
    base = ["--preset", "smoke", "--data", str(inputs / "corpus.txt"), "--tokenizer", "bpe:300",
            "--finetune-train", "none"]
    flags = [f.replace("{in}", str(inputs)) for f in flags]
    if cli == "t":
        command = TRAINER + base + flags + ([] if "--no-out" in flags else ["--out", "out"])
        command = [c for c in command if c != "--no-out"]
    else:
        command = SWEEP + base + flags
    env = {**os.environ, "GPTSWEEP_DATA_DIR": str(inputs / "empty-data-dir"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", **env}
    command = [command[0], "-X", "importtime", *command[1:]]  # the imports, on stderr
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    imports = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    packages = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in imports[1:]}  # [0] is the header
    done.stderr = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
    return done, packages


@pytest.mark.parametrize("cli, flags, expected", PARAMS)
def test_bad_input_gets_one_error_line_and_exit_2_before_anything_is_written(cli, flags, expected, inputs,
                                                                             tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    done, imported = run_cli(cli, flags, inputs, work)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expected in lines[0]
    assert list(work.iterdir()) == []  # no out folder, mlflow.db, ray_results, ...
    # Checked before the heavy imports, so it fails in about a second: the trainer imports neither Ray nor MLflow,
    # a sweep (whose search space is Ray Tune's domains) neither MLflow nor torch.
    assert not imported & ({"ray", "mlflow"} if cli == "t" else {"mlflow", "torch"}), sorted(imported)


def test_offline_hub_names_fail_saying_how_to_use_local_files(inputs, tmp_path, monkeypatch, capsys):
    """Both CLIs, both ways of being offline: HF_HUB_OFFLINE=1, and a hub endpoint that refuses connections."""
    from sweeps.lr_warmup import space
    from sweeps.engine.launch import run_sweep
    from trainer.__main__ import main

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("GPTSWEEP_DATA_DIR", str(inputs / "empty-data-dir"))
    corpus = str(inputs / "corpus.txt")
    for offline in ({"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}):
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
            monkeypatch.delenv(var, raising=False)
        for var, value in offline.items():
            monkeypatch.setenv(var, value)
        for data, tokenizer in (("wikitext-2", "bpe:300"), (corpus, "gpt2")):
            flags = ["--preset", "smoke", "--data", data, "--tokenizer", tokenizer, "--finetune-train", "none"]
            for entry in (lambda: main(flags + ["--out", "out"]), lambda: run_sweep("lr_warmup", space, flags)):
                assert entry() == 2
                error = capsys.readouterr().err
                assert "needs the Hugging Face hub" in error and "GPTSWEEP_DATA_DIR" in error
                assert "pass a local path" in error
    assert list(work.iterdir()) == []


def test_trainer_cli_writes_metrics_history_samples_and_config(inputs, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(TRAINER + ["--preset", "smoke", "--data", str(inputs / "corpus.txt"), "--tokenizer",
                                     "bpe:300", "--finetune-train", str(inputs / "news.csv"), "--finetune-test",
                                     str(inputs / "news.csv"), "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GPTSWEEP_DATA_DIR": str(inputs / "empty-data-dir")})
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["train.max_steps"] == 12 and config["data.tokenizer"] == "bpe:300"
    assert metrics["val_ppl"] > 1 and 0 <= metrics["val_acc"] <= 1 and metrics["diverged"] == 0
    assert metrics["val_loss"] == pytest.approx(math.log(metrics["val_ppl"]))
    assert {"train_loss", "lr", "tokens_per_s"} <= set(metrics) and metrics["val_bpb"] > 0
    # the corpus's floors, per token and per byte; the uniform one is log(vocabulary)
    assert metrics["floor_uniform"] == pytest.approx(math.log(config["model.vocab_size"]))
    assert metrics["floor_uniform"] > metrics["floor_unigram"] > metrics["floor_bigram"] > 0
    nats_to_bits_per_byte = metrics["floor_bigram_bpb"] / metrics["floor_bigram"]  # one byte count for all three
    for floor in ("floor_uniform", "floor_unigram"):
        assert metrics[f"{floor}_bpb"] == pytest.approx(metrics[floor] * nats_to_bits_per_byte)
    for key in ("finetune_acc", "finetune_acc_fewshot"):
        assert 0 <= metrics[key] <= 1 and (metrics[key] * 20).is_integer()  # scored on the 20 test rows
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [4, 8, 12]
    assert {k: metrics[k] for k in history[-1]} == history[-1]  # the last eval is the final metrics
    samples = (out / "samples.txt").read_text().strip().split("\n\n")
    assert len(samples) == 3 and all(s.strip() for s in samples)
    assert f"wrote {out}/metrics.json" in done.stdout
