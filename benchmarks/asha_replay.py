"""Replays Ray Tune's ASHA rule on a finished grid's learning curves: what each grace period and reduction factor
would have spent and found, without training again.

    python -m benchmarks.asha_savings          (prints the replay under "replay")

A full-budget (FIFO) sweep records every trial's val_loss at every eval. Under ASHA the trials would have produced
the same values up to the step where they were stopped (same seed, same data order, same schedule), so a sweep
under any ASHA setting can be replayed: trials start in the sweep's order, `slots` at a time, every step costs the
same time, and each report goes through Tune's own rung bookkeeping (`ray.tune.schedulers.async_hyperband`'s
bracket, rewards = −val_loss). The replay of the setting a real ASHA sweep ran must match that sweep's steps: the
benchmark prints both.
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

from ray.tune.schedulers.async_hyperband import _Bracket


@dataclass
class ReplayedTrial:
    trial_id: str  # the name Tune's bracket keys its rungs by


def replay(curves: list[dict[int, float]], grace: int, reduction_factor: float, slots: int,
           order: list[int] | None = None) -> tuple[list[int], float]:
    """Steps each trial would run under ASHA (time_attr = step, max_t = the curves' last step) and the best
    val_loss among the trials that reach max_t. `curves` are in the sweep's start order unless `order` says."""
    max_t = max(max(c) for c in curves)
    bracket = _Bracket(min_t=grace, max_t=max_t, reduction_factor=reduction_factor, s=0)
    queue = list(order if order is not None else range(len(curves)))
    reported_steps = [sorted(c) for c in curves]
    steps, events = [0] * len(curves), []  # events: (time, trial, report index)

    def start(i: int, now: float) -> None:
        heapq.heappush(events, (now + reported_steps[i][0], i, 0))

    for _ in range(min(slots, len(queue))):
        start(queue.pop(0), 0.0)
    while events:
        now, i, k = heapq.heappop(events)
        reports = reported_steps[i]
        step = reports[k]
        action = bracket.on_result(ReplayedTrial(str(i)), step, -curves[i][step])
        if action == "STOP" or k + 1 == len(reports):
            steps[i] = step
            if queue:
                start(queue.pop(0), now)
        else:
            heapq.heappush(events, (now + reports[k + 1] - step, i, k + 1))
    finished = [curves[i][s] for i, s in enumerate(steps) if s == max_t]
    return steps, min(finished) if finished else math.inf


def replay_table(curves: list[dict[int, float]], settings: list[tuple[int, float]], slots: int,
                 shuffles: int = 200, seed: int = 0) -> list[dict]:
    """Per (grace, reduction factor): steps ratio and best-val_ppl gap against the full grid, in the sweep's own
    order and averaged over `shuffles` random orders (ASHA is asynchronous: the first trials at a rung always
    pass, so the order matters)."""
    full_steps = sum(max(c) for c in curves)
    best_loss = min(c[max(c)] for c in curves)
    rng = random.Random(seed)
    orders = [rng.sample(range(len(curves)), len(curves)) for _ in range(shuffles)]
    rows = []
    for grace, rf in settings:
        def outcome(order):
            steps, best = replay(curves, grace, rf, slots, order)
            return sum(steps) / full_steps, math.exp(best - best_loss) - 1

        ratio, gap = outcome(None)
        shuffled = [outcome(o) for o in orders]
        rows.append({
            "grace": grace, "reduction_factor": rf, "steps_ratio": round(ratio, 3), "best_val_ppl_gap": round(gap, 4),
            "shuffled_mean_steps_ratio": round(sum(r for r, _ in shuffled) / len(shuffled), 3),
            "shuffled_share_within_3pct": round(sum(g <= 0.03 for _, g in shuffled) / len(shuffled), 2),
            "shuffled_share_meeting_both_targets": round(
                sum(r <= 0.30 and g <= 0.03 for r, g in shuffled) / len(shuffled), 2),
        })
    return rows
