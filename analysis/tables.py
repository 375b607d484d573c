"""Tables and numbers of a sweep report: the trial summary, the grid pivot, correlations, ASHA accounting.

    python -m analysis.report --experiment lr_warmup      (these are pure functions over analysis.runs frames)
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.runs import failed
from trainer import result_schema as R
from trainer.result_schema import format_value

SUMMARY_METRICS = {"final_val_ppl": "final val_ppl", "final_val_bpb": "final val_bpb", "best_val_ppl": "best val_ppl",
                   "finetune_acc": "finetune_acc",
                   "finetune_acc_fewshot": "finetune_acc_fewshot", "steps": "steps", "outcome": "outcome"}


def summary_table(trials: pd.DataFrame, searched: list[str]) -> pd.DataFrame:
    """Every trial, its searched values and results, the best trial on top (trainer.result_schema.rank_key:
    completed trials by final val_ppl, then pruned or unfinished ones, then failed)."""
    columns = ["trial_id", *searched, *SUMMARY_METRICS]
    order = sorted(range(len(trials)), key=lambda i: (*R.rank_key(trials.outcome.iloc[i], trials.final_val_ppl.iloc[i]),
                                                       str(trials.trial_id.iloc[i])))
    return trials.iloc[order][columns].rename(columns=SUMMARY_METRICS).reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub markdown table (no dependency on `tabulate`); numbers right-aligned."""
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    lines = ["| " + " | ".join(str(c) for c in table.columns) + " |",
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(format_value(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def grid_pivot(trials: pd.DataFrame, x_key: str, y_key: str, value: str = "final_val_ppl",
               aggfunc: str = "mean") -> pd.DataFrame:
    """`aggfunc` of `value` per (y, x) cell of a grid sweep (over its repeats): rows are y_key values, columns
    x_key values, both sorted; cells without a usable trial (diverged, error, missing) are NaN."""
    ok = trials[~failed(trials)]
    table = ok.pivot_table(index=y_key, columns=x_key, values=value, aggfunc=aggfunc)
    return table.reindex(index=sorted(trials[y_key].dropna().unique()),
                         columns=sorted(trials[x_key].dropna().unique()))


def grid_spread(trials: pd.DataFrame, x_key: str, y_key: str) -> pd.DataFrame:
    """'mean ± std (n)' of the final val_ppl per cell, for a grid repeated with several seeds."""
    mean, std, n = (grid_pivot(trials, x_key, y_key, aggfunc=f) for f in ("mean", "std", "count"))
    cells = mean.copy().astype(object)
    for y in mean.index:
        for x in mean.columns:
            cells.loc[y, x] = (f"{mean.loc[y, x]:.1f} ± {std.loc[y, x]:.1f} ({int(n.loc[y, x])})"
                               if n.loc[y, x] > 1 else format_value(mean.loc[y, x]))
    return cells.rename_axis(index=f"{y_key} \\ {x_key}").reset_index()


def correlation(x: pd.Series, y: pd.Series) -> dict[str, float]:
    """Pearson and Spearman (Pearson of ranks) over the pairs where both are present; NaN below 3 pairs."""
    pairs = pd.DataFrame({"x": x.to_numpy(dtype=float), "y": y.to_numpy(dtype=float)}).dropna()
    n = len(pairs)
    if n < 3 or pairs.x.nunique() < 2 or pairs.y.nunique() < 2:
        return {"n": n, "pearson": math.nan, "spearman": math.nan}
    ranks = pairs.rank()
    return {"n": n, "pearson": float(np.corrcoef(pairs.x, pairs.y)[0, 1]),
            "spearman": float(np.corrcoef(ranks.x, ranks.y)[0, 1])}


def asha_accounting(trials: pd.DataFrame) -> dict[str, float]:
    """Training steps spent (each trial's last step) against the full budget (trials × train.max_steps)."""
    spent = int(trials.steps.fillna(0).sum())
    budget = int(trials.max_steps.fillna(0).sum())
    return {"trials": len(trials), "spent": spent, "budget": budget,
            "saving": 1 - spent / budget if budget else math.nan,
            "pruned": int((trials.outcome == R.PRUNED).sum()), "completed": int((trials.outcome == R.COMPLETED).sum())}


def compute_totals(trials: pd.DataFrame) -> dict[str, float]:
    """The sweep's compute ledger: FLOPs, tokens and device seconds its trials spent (each one's last entry),
    and the FLOPs the same trials would have spent run to their train.max_steps (what early stopping saved)."""
    if "flops" not in trials or trials.flops.isna().all():
        return {"flops": math.nan, "tokens": math.nan, "device_s": math.nan, "planned_flops": math.nan}
    per_step = trials.flops / trials.steps.where(trials.steps > 0)
    return {"flops": float(trials.flops.sum()), "tokens": float(trials.tokens.sum()),
            "device_s": float(trials.device_s.sum()), "planned_flops": float((per_step * trials.max_steps).sum())}


def outcome_counts(trials: pd.DataFrame) -> str:
    """'8 completed, 2 pruned' in a fixed order."""
    order = [*R.OUTCOMES, R.UNKNOWN]
    counts = trials.outcome.value_counts()
    known = [o for o in order if o in counts] + sorted(o for o in counts.index if o not in order)
    return ", ".join(f"{counts[o]} {o}" for o in known) or "no trials"
