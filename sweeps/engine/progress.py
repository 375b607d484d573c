"""What a person watching a sweep sees: a table that fills between evals, and the time left.

    python sweeps/lr_warmup.py        (the console table every 30 s, with "elapsed ..., about ... left")

Trials report cheap progress between evals (step, train_loss, tokens_per_s; no checkpoint, no val_loss).
Only results carrying the sweep's metric (val_loss) may reach what ranks trials: ASHA already ignores the others,
Tune's strict metric check is switched off for them (sweeps/engine/launch.py), sweeps.engine.searcher.TruthfulOptunaSearch and
the MLflow callback skip them.
"""
from __future__ import annotations

import time

from ray.tune import CLIReporter


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def time_left_line(trials: list, total_trials: int, max_steps: int, elapsed_s: float) -> str:
    """'elapsed 2m10s, about 5m20s left': the remaining share of all trials' steps at the pace so far.
    A finished trial (completed or stopped early) counts as all its steps, so ASHA's stops shorten the estimate
    as they happen; fine-tuning is not counted in steps, which makes it a slight underestimate."""
    done = sum(max_steps if t.status in ("TERMINATED", "ERROR") else (t.last_result or {}).get("step", 0)
               for t in trials)
    share = done / max(1, total_trials * max_steps)
    if share <= 0:
        return f"elapsed {_duration(elapsed_s)}, time left: after the first progress reports"
    return f"elapsed {_duration(elapsed_s)}, about {_duration(elapsed_s * (1 - share) / share)} left " \
           f"({share:.0%} of the trials' steps done)"


class TimeLeftReporter(CLIReporter):
    """Tune's table plus one summary line of elapsed and estimated remaining time."""

    def __init__(self, *, total_trials: int, max_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.total_trials, self.max_steps = total_trials, max_steps

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        line = time_left_line(trials, self.total_trials, self.max_steps, time.time() - self._start_time)
        super().report(trials, done, *sys_info, line)
