"""The sweep report: a markdown page with figures from one sweep's MLflow runs. It only reads MLflow.

    python -m analysis.report --experiment lr_warmup [--mlflow-uri URI] [--run PARENT_RUN_ID] [--out DIR]

Defaults: the latest sweep (parent run, tag gptsweep.role=sweep) of the experiment, the sweeps' own default
store sqlite:///<cwd>/mlflow.db, and reports/<experiment>/<the sweep's Tune folder name>/ as the output folder
(e.g. reports/lr_warmup/lr_warmup_20261202-035300/).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd

from analysis import figures, tables
from analysis.importance import param_importances
from analysis.runs import FLOORS, SCRATCH, Sweep, best_trial, failed, fetch_sweep, report_folder, usable_trials
from analysis.transfer_fit import transfer_section
from trainer.cli import ArgumentParser, default_tracking_uri, exits_cleanly_on_bad_input
from trainer.result_schema import format_value


def plot_keys(trials: pd.DataFrame, searched: list[str]) -> tuple[str | None, str | None]:
    """(x, y) of the search figure: the learning rate and warmup when searched, else the first two keys."""
    varying = [k for k in searched if k in trials and trials[k].astype(str).nunique() > 1] or list(searched)
    lr = next((k for k in varying if k.split(".")[-1] == "lr"), None)
    warmup = next((k for k in varying if "warmup" in k and k != lr), None)
    if lr and warmup:
        return lr, warmup
    rest = [k for k in varying if k != lr]
    ordered = [lr, *rest] if lr else rest
    return (ordered + [None, None])[0], (ordered + [None, None])[1]


def _section_search(sweep: Sweep, out: Path, written: list[Path]) -> list[str]:
    x, y = plot_keys(sweep.trials, sweep.searched)
    if x is None:
        return ["## 2. Search space", "", "No searched hyperparameters recorded (tag gptsweep.searched is empty)."]
    title = f"## 2. {x} × {y}" if y else f"## 2. {x}"
    if sweep.search == "grid" and y is not None:
        fig = figures.grid_heatmap(tables.grid_pivot(sweep.trials, x, y), x, y)
        text = "Grid search: each cell is the final val_ppl of that combination (mean over repeats)."
        if int(sweep.params.get("sweep.num_samples", 1)) > 1:  # repeats, one seed each: how much a cell means
            text += "\n\nOver the seeds: mean ± std (repeats).\n\n" + tables.to_markdown(
                tables.grid_spread(sweep.trials, x, y))
    else:
        fig = figures.search_scatter(sweep.trials, x, y)
        text = (f"{sweep.search or 'unknown'} search: each point a trial, coloured by final val_ppl "
                "(a pruned trial's value is from its shorter run).")
    written.append(out / "search.png")
    figures.save(fig, written[-1])
    return [title, "", text, "", "![trials over the searched values](search.png)"]


def _section_curves(sweep: Sweep, out: Path, written: list[Path]) -> list[str]:
    lines = ["## 3. Learning curves", ""]
    if sweep.curves.empty:
        return lines + ["No val_loss history logged."]
    written.append(out / "learning_curves.png")
    figures.save(figures.learning_curves(sweep.curves, sweep.trials, sweep.floors), written[-1])
    lines.append("![val_loss by step for every trial](learning_curves.png)")
    best = best_trial(sweep.trials)
    if not sweep.floors:
        lines += ["", "No corpus floors logged (floor_uniform, floor_unigram, floor_bigram): no reference lines."]
    elif best is not None:
        lines += ["", "| reference | nats/token | bits/byte | perplexity | best trial's final val_loss beats it? |",
                  "|:---|---:|---:|---:|:---|"]
        for name in [f for f in FLOORS if f in sweep.floors]:
            value, bpb = sweep.floors[name], sweep.floors.get(f"{name}_bpb", math.nan)
            verdict = "yes" if best.final_val_loss < value else "**no**"
            lines.append(f"| {name} | {value:.3f} | {format_value(bpb)} | {format_value(math.exp(value))} | "
                         f"{verdict} ({best.final_val_loss:.3f}; "
                         f"{format_value(best.final_val_bpb)} bits/byte) |")
    return lines


def _section_importance(sweep: Sweep, out: Path, written: list[Path]) -> list[str]:
    lines = ["## 4. Hyperparameter importance for val_ppl", ""]
    result = param_importances(sweep.trials, sweep.searched, study=sweep.study)
    if result.values:
        lines += ["| hyperparameter | importance |", "|:---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in result.values.items()]
        lines += [""]
    lines += [f"Importance: {result.note}."]
    keys = [k for k in sweep.searched if k in sweep.trials]
    usable = usable_trials(sweep.trials)
    if keys and len(usable) >= 2:
        written.append(out / "parallel_coordinates.png")
        figures.save(figures.parallel_coordinates(sweep.trials, keys), written[-1])
        lines += ["", "![parallel coordinates of the searched values and val_ppl](parallel_coordinates.png)"]
    return lines


def _section_accuracy(sweep: Sweep, out: Path, written: list[Path]) -> list[str]:
    lines = ["## 5. Does a better language model make a better classifier?", ""]
    usable = sweep.trials[~failed(sweep.trials)]
    stats = {c: tables.correlation(usable.final_val_ppl, usable[c]) for c in figures.ACCURACIES if c in usable}
    if not any(s["n"] for s in stats.values()):
        return lines + ["No fine-tuning accuracies logged (fine-tuning off, or no trial completed)."]
    lines += ["| accuracy | trials | Pearson r (val_ppl, acc) | Spearman ρ |", "|:---|---:|---:|---:|"]
    for column, s in stats.items():
        lines.append(f"| {column} | {s['n']} | {format_value(s['pearson'])} | "
                     f"{format_value(s['spearman'])} |")
    if any(0 < s["n"] < 3 for s in stats.values()):
        lines += ["", "Fewer than 3 trials with an accuracy: too few points for a correlation."]
    lines += ["", "A negative r means lower perplexity goes with higher accuracy. Only completed trials fine-tune."]
    lines += ["", _scratch_line(sweep)]
    written.append(out / "ppl_vs_accuracy.png")
    figures.save(figures.ppl_vs_accuracy(sweep.trials, stats), written[-1])
    return lines + ["", "![val_ppl against fine-tuning accuracy](ppl_vs_accuracy.png)"]


def _scratch_line(sweep: Sweep) -> str:
    """Does pretraining help? The parent run's scratch baseline beside the best trial's accuracies."""
    if not sweep.scratch:
        return "No scratch baseline logged (finetune_acc_scratch: the sweep ended early or did not fine-tune)."
    best = best_trial(sweep.trials)
    parts = []
    for name in SCRATCH:
        pretrained = best[name.removesuffix("_scratch")] if best is not None else math.nan
        gain = 100 * (pretrained - sweep.scratch.get(name, math.nan))
        parts.append(f"{name} {format_value(sweep.scratch.get(name))} against the best trial's "
                     f"{format_value(pretrained)} "
                     f"({'+' if gain >= 0 else ''}{format_value(gain)} points)")
    return ("Without pretraining (the same fine-tuning recipe on random weights of the best trial's shape): "
            + "; ".join(parts) + ".")


def _section_samples(sweep: Sweep) -> list[str]:
    lines = ["## 6. The best trial's samples", ""]
    best = best_trial(sweep.trials)
    if best is None or best.trial_id not in sweep.samples:
        return lines + ["No samples artifact found for the best trial."]
    lines.append(f"Trial {best.trial_id} at its last eval (step {best.steps}):")
    for text in sweep.samples[best.trial_id].split("\n\n---\n\n"):
        lines += ["", "```text", text.replace("```", "'''").strip(), "```"]
    return lines


def _section_asha(sweep: Sweep) -> list[str]:
    a = tables.asha_accounting(sweep.trials)
    scheduler = sweep.params.get("sweep.scheduler", "?")
    saving = f"{a['saving']:.0%}" if not math.isnan(a["saving"]) else "–"
    return ["## 7. Early-stopping accounting", "",
            f"Scheduler {scheduler} (grace {sweep.params.get('sweep.grace_steps', '?')} steps): "
            f"{a['spent']:,} training steps spent of a full budget of {a['budget']:,} "
            f"({a['trials']} trials × train.max_steps), a saving of {saving}; "
            f"{a['pruned']} pruned, {a['completed']} completed.", *_compute_line(sweep)]


def _compute_line(sweep: Sweep) -> list[str]:
    c = tables.compute_totals(sweep.trials)
    if math.isnan(c["flops"]):
        return []
    return ["", f"Compute ledger (trainer/compute.py): {c['flops']:.3g} training FLOPs over {c['tokens']:,.0f} "
                f"tokens in {c['device_s']:,.0f} device seconds, of {c['planned_flops']:.3g} FLOPs had every trial "
                "run to its end."]


def build_report(sweep: Sweep, out: Path) -> tuple[str, list[Path]]:
    """Write the figures into `out`; return the markdown text and the figure paths."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    best = best_trial(sweep.trials)
    fixed = ", ".join(f"{k.removeprefix('sweep.')}={sweep.params[k]}" for k in
                      ("sweep.preset", "data.source", "data.tokenizer", "train.seed") if k in sweep.params)
    head = [f"# Sweep report: {sweep.run_name}", "",
            f"Experiment `{sweep.experiment}`, parent run `{sweep.run_id}` ({sweep.status}); "
            f"search {sweep.search or '?'}, scheduler {sweep.params.get('sweep.scheduler', '?')}; "
            f"searched: {', '.join(sweep.searched) or 'nothing'}.", "", f"Fixed: {fixed}.", "",
            f"Trials: {tables.outcome_counts(sweep.trials)}."]
    if best is not None:
        chosen = ", ".join(f"{k}={format_value(best[k])}" for k in sweep.searched if k in best)
        head += ["", f"**Best trial {best.trial_id}**: {chosen}: final val_ppl {best.final_val_ppl:.4g} "
                     f"(val_loss {best.final_val_loss:.3f} nats, {format_value(best.final_val_bpb)} bits per "
                     f"byte) after {best.steps} steps."]
    if sweep.trials.empty:
        return "\n".join(head + ["", "No trial runs under this sweep (yet): nothing to report."]) + "\n", written
    summary = tables.summary_table(sweep.trials, [k for k in sweep.searched if k in sweep.trials])
    sections = [head, ["## 1. Trials (the best first: completed by final val_ppl, then pruned or unfinished, then "
                       "failed)", "", tables.to_markdown(summary)],
                _section_search(sweep, out, written), *transfer_section(sweep, out, written),
                _section_curves(sweep, out, written),
                _section_importance(sweep, out, written), _section_accuracy(sweep, out, written),
                _section_samples(sweep), _section_asha(sweep)]
    text = "\n\n".join("\n".join(s) for s in sections) + \
        f"\n\n---\n*Generated by `python -m analysis.report --experiment {sweep.experiment} --run {sweep.run_id}` " \
        f"on {time.strftime('%Y-%m-%d %H:%M')}.*\n"
    return text, written


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="MLflow experiment (a sweep's --experiment)")
    parser.add_argument("--mlflow-uri", default=None, help="default: sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--run", default=None, help="parent run id of the sweep (default: the latest sweep)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: reports/<experiment>/<the sweep's Tune folder name>)")
    return parser.parse_args(argv)


@exits_cleanly_on_bad_input
def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    sweep = fetch_sweep(args.mlflow_uri or default_tracking_uri(), args.experiment, args.run)
    out = Path(args.out or report_folder(sweep)).resolve()
    text, written = build_report(sweep, out)
    (out / "report.md").write_text(text, encoding="utf-8")
    print(f"report: {out / 'report.md'} ({len(sweep.trials)} trials, {len(written)} figures, "
          f"{time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
