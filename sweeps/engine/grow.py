"""Growing a finished sweep: `--resume --num-samples N` adds trials to the same sweep until it has N.

    python sweeps/lr_warmup.py --resume --num-samples 12      (a 6-trial sweep, finished, gets 6 more)

Ray Tune cannot raise a restored experiment's num_samples, so the new trials run as a new Tune experiment
beside the first (NAME_growN) that carries the first one's identity: the same MLflow parent run (found by the
first folder's path), the same journal and the same Optuna study (which proposes from every trial seen so far).
`gptsweep_origin.json` in each later part names the first part.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ray.tune import ExperimentAnalysis

from trainer.config import ConfigError

ORIGIN_FILE = "gptsweep_origin.json"


@dataclass(frozen=True)
class Growth:
    origin: Path  # the sweep's first Tune folder: its identity in MLflow and Optuna
    trials: int  # trials the sweep has so far, over all its parts
    folder: Path  # the new part's Tune folder


def origin_of(part: Path) -> Path:
    marker = part / ORIGIN_FILE
    return Path(json.loads(marker.read_text())["origin"]) if marker.is_file() else part


def parts_of(origin: Path) -> list[Path]:
    return [origin, *sorted(p for p in origin.parent.glob(f"{origin.name}_grow*") if (p / ORIGIN_FILE).is_file())]


def plan_growth(latest: Path, grow_to: int, search: str) -> Growth | None:
    """None when the latest part has unfinished trials or already N: then --resume just continues it."""
    origin = origin_of(latest)
    trials = [t for part in parts_of(origin) for t in ExperimentAnalysis(str(part)).trials]
    if grow_to <= len(trials) or any(t.status not in ("TERMINATED", "ERROR") for t in trials):
        return None
    if search == "grid":
        raise ConfigError("--resume --num-samples grows optuna or random sweeps; a grid has its cells: start a new "
                          "sweep with --search grid --num-samples N for N seeds")
    return Growth(origin, len(trials), origin.parent / f"{origin.name}_grow{grow_to}")


def mark_part(growth: Growth) -> None:
    growth.folder.mkdir(parents=True, exist_ok=True)
    (growth.folder / ORIGIN_FILE).write_text(json.dumps({"origin": str(growth.origin)}) + "\n")
