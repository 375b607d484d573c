"""Flags shared by every command line (`python -m trainer`, `python sweeps/*.py`) and the exit-2 error path.

    python -m trainer --help
"""
from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path
from typing import Callable

from trainer.config import ConfigError, RunConfig, build_config, default_preset, parse_overrides
from trainer.sources import available_splits


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the exit-2 error path of every other bad input: one line on stderr, no usage block."""

    def error(self, message: str):
        print(f"error: {' '.join(message.split())}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def add_config_args(parser: argparse.ArgumentParser, finetune_default: str | None) -> None:
    """--preset, the data flags and --set: everything that builds a RunConfig."""
    parser.add_argument("--preset", default=None, help="smoke, cpu or seed (default: seed with CUDA, else cpu)")
    parser.add_argument("--data", default="wikitext-2",
                        help="pre-training corpus: wikitext-2, tinystories, or a local file/folder")
    parser.add_argument("--val-data", default=None, help="validation corpus (default: held-out documents)")
    parser.add_argument("--tokenizer", default=None,
                        help="gpt2, a local tokenizer folder/tokenizer.json, or bpe:N (trained on the corpus); "
                             "default: the preset's (cpu: bpe:4096, seed: gpt2)")
    parser.add_argument("--finetune-train", default=finetune_default,
                        help=f"classification training table: ag_news or a local CSV/JSONL/parquet "
                             f"(default: {finetune_default}; 'none' skips fine-tuning)")
    parser.add_argument("--finetune-test", default=None, help="classification test table (default: ag_news test)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override any config field, e.g. --set optim.lr=1e-3 (repeatable)")


def config_from_args(args: argparse.Namespace, defaults: dict[str, object] | None = None) -> tuple[str, RunConfig]:
    """The preset name and the validated config the flags describe (`defaults` below --set); raises ConfigError."""
    preset = args.preset or default_preset()
    overrides = {"data.source": args.data, "data.val_source": args.val_data,
                 "data.finetune_train": args.finetune_train, "data.finetune_test": args.finetune_test,
                 **({"data.tokenizer": args.tokenizer} if args.tokenizer else {}), **(defaults or {}),
                 **parse_overrides(args.overrides)}
    cfg = build_config(preset, overrides)
    check_data_sources(cfg)
    return preset, cfg


def check_data_sources(cfg: RunConfig) -> None:
    """Every dataset name and path resolves (else a ConfigError): cheap, so a typo in --finetune-test fails now,
    not after the corpus has been tokenized."""
    for spec in (cfg.data.source, cfg.data.val_source, cfg.data.finetune_train, cfg.data.finetune_test):
        if spec:
            available_splits(spec)


def check_writable_folder(folder: Path, flag: str) -> None:
    """`folder` exists or can be made, and this user can write there: found out now, not after the run. Tried by
    creating (and at once deleting) a file in it or in its nearest existing parent, which also catches read-only
    mounts and the permissions that os.access does not see for root."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {folder}: {existing} is a file, not a folder; pass a folder path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(f"{flag} {folder}: cannot write in {existing} ({error.strerror or error}); "
                          "pass a folder you can write to") from None


def default_tracking_uri() -> str:
    """--mlflow-uri's default for the sweeps and the report: sqlite:///<cwd>/mlflow.db, absolute (trials chdir
    into their own folders; MLflow 3 refuses the ./mlruns file store). Here, not in sweeps.engine.tracking.tune_events, so that
    checking the input does not import MLflow (seconds)."""
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


def exits_cleanly_on_bad_input(main: Callable[..., int | None]) -> Callable[..., int]:
    """Turn a ConfigError into one line on stderr and exit code 2 (no traceback: the message names the fix)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapper
