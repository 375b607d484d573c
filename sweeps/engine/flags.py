"""The flags every sweep script shares, and the command line that continues an interrupted sweep.

    python sweeps/lr_warmup.py --help
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from trainer.cli import ArgumentParser, add_config_args


def parse_args(name: str, argv: list[str] | None, default_search: str) -> argparse.Namespace:
    parser = ArgumentParser(prog=f"python sweeps/{name}.py")
    add_config_args(parser, finetune_default="ag_news")
    parser.add_argument("--search", choices=("optuna", "grid", "random"), default=default_search)
    parser.add_argument("--scheduler", choices=("asha", "fifo"), default=None,
                        help="early stopping (default: asha, except fifo for grid so the table is complete)")
    parser.add_argument("--num-samples", type=int, default=None, help="trials (grid: repeats of the grid)")
    parser.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what fits)")
    parser.add_argument("--cpus-per-trial", type=float, default=None)
    parser.add_argument("--gpus-per-trial", type=str, default=None, help="a fraction lets trials share a GPU")
    parser.add_argument("--storage", default="ray_results", help="Tune results folder or URI")
    parser.add_argument("--mlflow-uri", default=None, help="default: sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--experiment", default=name, help="MLflow experiment and Tune run name prefix")
    parser.add_argument("--address", default=None, help="join a running Ray cluster (e.g. auto)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the latest sweep of this experiment (after Ctrl+C/SIGTERM or a crash)")
    parser.add_argument("--seed", type=int, default=0, help="searcher and training seed")
    parser.add_argument("--register", default=None, metavar="NAME",
                        help="add the best trial's model to MLflow's model registry as a new version of NAME")
    return parser.parse_args(argv)


def resume_command(name: str, argv: list[str] | None) -> str:
    """The command line that continues this sweep: the same flags plus --resume, run from the same folder
    (relative --storage, --mlflow-uri and data paths mean the same thing there)."""
    script = sys.argv[0] if argv is None and Path(sys.argv[0]).name == f"{name}.py" else f"sweeps/{name}.py"
    flags = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]
    python = shutil.which("python")
    same = python is not None and os.path.realpath(python) == os.path.realpath(sys.executable)
    line = shlex.join(["python" if same else sys.executable, script, *flags, "--resume"])
    return f"cd {shlex.quote(os.getcwd())} && {line}"
