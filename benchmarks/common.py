"""What every benchmark shares: the real data it needs (GPTSWEEP_DATA_DIR) and how it prints its JSON object.

    python -m benchmarks.throughput --json      (every benchmark's main() ends in emit)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from trainer.sources import local_copy


def shared_file(folder: str, name: str | None = None) -> Path:
    """$GPTSWEEP_DATA_DIR/folder[/name], or exit naming what is missing and how to provide it."""
    root = local_copy(folder)
    path = root / name if root is not None and name else root
    if path is None or not path.exists():
        sys.exit(f"needs {folder}/{name or ''} in GPTSWEEP_DATA_DIR; set it to a folder of local dataset copies")
    return path


def offline(cache_dir: Path | None = None) -> None:
    """Never wait on the hub; optionally a private token cache."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if cache_dir is not None:
        os.environ["GPTSWEEP_CACHE_DIR"] = str(cache_dir)


def emit(result: dict, json_only: bool) -> dict:
    print(json.dumps(result, indent=None if json_only else 1))
    return result


def sweep_benchmark_parser(prog: str) -> argparse.ArgumentParser:
    """The flags of a benchmark that runs real sweeps: --slots (concurrent trials) and --json."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--slots", type=int, default=2, help="concurrent trials (one CPU each)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    return parser
