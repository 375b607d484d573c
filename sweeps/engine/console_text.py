"""The sweep's console summary: the best trial, its model, where MLflow lives, what went wrong, the exit code.

    python sweeps/lr_warmup.py      (the lines after "sweep finished")
"""
from __future__ import annotations

import re
import sys

from trainer.config import spread_params
from trainer.result_schema import ERROR, best_of, format_value, outcome_of

ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")


def error_line(error: BaseException) -> str:
    """`Type: first line` of the exception a trial raised. Ray wraps it in a RayTaskError whose text begins with
    the actor's coloured name ("ray::ImplicitFunc.train() (pid=...)"); its `cause` is the trial's own exception."""
    while getattr(error, "cause", None) is not None and error.cause is not error:
        error = error.cause
    lines = [line.strip() for line in ANSI_CODE.sub("", str(error)).splitlines() if line.strip()]
    if type(error).__name__.startswith("RayTaskError") and lines:
        return lines[-1]  # no cause came back: the traceback's last line names the exception
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def browse_hint(tracking_uri: str) -> str:
    """How to look at the sweep in MLflow's UI: a tracking server serves it; a database needs `mlflow ui`."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"browse: open {tracking_uri.rstrip('/')} in a browser"
    return ("browse: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui "
            f"--backend-store-uri {tracking_uri} --host 127.0.0.1 --workers 1")


def best_result(results):
    """The best of a sweep's Tune results (trainer.result_schema.best_of), or None."""
    return best_of([r for r in results if r.metrics], lambda r: ERROR if r.error is not None else outcome_of(r.metrics),
                   lambda r: r.metrics.get("val_ppl"))


def exit_code(results) -> int:
    """0 when some trial produced a result (diverged trials are results; errors are not), else 1 with one line
    on stderr naming the first error."""
    if any(r.error is None and r.metrics for r in results):
        return 0
    first = next((r.error for r in results if r.error is not None), None)
    reason = error_line(first) if first is not None else "none ran"
    print(f"error: no trial produced a result ({len(results)} trials, first error {reason}); "
          f"see {results.experiment_path}", file=sys.stderr)
    return 1


def print_summary(plan, results, wall_s: float, prepared_s: float, sweep) -> None:
    """What the sweep found (its best trial and model) and where to look at it."""
    from sweeps.engine.tracking.registry import best_model_lines  # MLflow: imported once the sweep has run
    from sweeps.engine.tracking.writer import sweep_urls

    print(f"\nsweep finished in {wall_s:.0f}s ({prepared_s:.1f}s preparing data): {len(results)} trials, "
          f"{len(results.errors)} errors")
    best = best_result(results)
    if best is not None:
        config = spread_params(best.config)
        chosen = ", ".join(f"{k}={format_value(config[k])}" for k in plan.searched)
        extra = "".join(f", {k}={best.metrics[k]:.3f}" for k in ("finetune_acc", "finetune_acc_fewshot")
                        if k in best.metrics)
        print(f"best trial: {chosen}: val_ppl={best.metrics['val_ppl']:.1f}{extra}")
    for line in best_model_lines(sweep, plan.register):
        print(line)
    urls = sweep_urls(sweep)
    print(f"MLflow: {plan.tracking_uri}  ({browse_hint(plan.tracking_uri)})")
    if urls:
        print(f"  the sweeps (+ on a row shows its trials): {urls[0]}\n  this sweep's page: {urls[1]}")
    print(f"Tune results: {results.experiment_path}")
