"""What a person sees of a sweep in the MLflow UI: run names, the parent run's description, the URLs to open.

    python sweeps/lr_warmup.py      (the tracking callback names and describes the runs; the summary prints the URL)

Pure functions over plain values, so that the page a user reads is tested without a browser
(tests/sweeps/tracking/test_mlflow_ui.py looks at it in one). MLflow renders the run tag `mlflow.note.content` as Markdown on the run page ("Description")
and the experiment tag of the same name on the experiment page.

Model-training mode: MLflow 3.17's UI decides GenAI vs model-training mode by its sidebar switch, kept in the
browser's localStorage (`mlflow.workflowType`, GenAI by default) and overridden by the URL parameter
`workflowType=machine_learning`; it writes the experiment tag `mlflow.experimentKind` (value
`custom_model_development` for "Machine learning") from its experiment-kind selector, and the MLflow versions
without the switch read that tag. So the experiment carries the tag and every URL made here carries the parameter.

The runs table shows no metric until columns are picked, and that choice lives in the browser too; the URL parameter
`viewStateShareKey=<key>` opens the view kept in the experiment tag `mlflow.sharedViewState.<key>` (JSON: columns,
their order and widths; the UI's shared views). The sweep writes one (RUNS_VIEW_KEY) and the experiment URL opens it.
"""
from __future__ import annotations

import json
import time

from mlflow.entities import Metric

from trainer import result_schema as R
from trainer.result_schema import format_value

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"
MODEL_TRAINING_QUERY = "workflowType=machine_learning"
RUNS_VIEW_KEY = "gptsweep"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"
UI_ADDRESS = "http://127.0.0.1:5000"  # what `mlflow ui --host 127.0.0.1` serves (its default port)
TABLE_METRICS = ("val_ppl", "val_loss", "finetune_acc", "finetune_acc_fewshot")


def experiment_tags(experiment: str) -> dict[str, str]:
    """Tags of a sweep experiment: model-training mode and a short description of what its runs are."""
    note = (f"Hyperparameter sweeps of `{experiment}` (gptsweep): each top-level run is one sweep; expand it "
            "(the + at the start of its row) to see one run per trial, with its searched values as the run name, "
            "`val_loss`/`val_ppl` curves per eval and `finetune_acc` at the end. The sweep's own page holds the "
            "best trial, every trial (the best first) and the command that writes the report.")
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, NOTE_TAG: note}


def runs_view(searched: list[str]) -> str:
    """The runs table a sweep reads best in: val_ppl and finetune_acc of each trial, the sweep's best_val_ppl,
    the searched values and each trial's outcome; a Run Name column wide enough for the sweep's name."""
    columns = ["metrics.`val_ppl`", "metrics.`finetune_acc`", "metrics.`best_val_ppl`",
               *(f"params.`{k}`" for k in searched), f"tags.`{R.OUTCOME}`"]
    return json.dumps({"selectedColumns": columns, "columnOrder": ["attributes.`Run Name`", *columns],
                       "columnWidths": {"attributes.`Run Name`": 330}})


def short_names(searched: list[str]) -> dict[str, str]:
    """optim.warmup_steps → warmup, optim.lr → lr; the full dotted key where two short names would clash."""
    short = {k: k.rsplit(".", 1)[-1].removesuffix("_steps") for k in searched}
    clashing = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {k: (k if s in clashing else s) for k, s in short.items()}


def trial_run_name(config: dict, searched: list[str], taken: set[str]) -> str:
    """`lr=2.65e-3 warmup=38`: the trial's searched values; ` (2)`, ` (3)`... when another trial has that name."""
    names = short_names(searched)
    return unique_name(" ".join(f"{names[k]}={format_value(config[k])}" for k in searched if k in config)
                       or "trial", taken)


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base (2)`, `base (3)`... the first that no other trial of the sweep has."""
    name, copy = base, 1
    while name in taken:
        copy += 1
        name = f"{base} ({copy})"
    return name


def sweep_run_name(experiment: str, started: float, trials: int) -> str:
    """`lr_warmup 2026-12-02 03:53, 6 trials` (local time of the sweep's start)."""
    return f"{experiment} {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}, " \
           f"{trials} trial{'' if trials == 1 else 's'}"


def run_path(experiment_id: str, run_id: str | None = None, artifact: str | None = None) -> str:
    """The UI route (after `#`): the experiment's runs, a run's page, or one artifact of a run."""
    if run_id is None:
        return f"/experiments/{experiment_id}/runs"
    return f"/experiments/{experiment_id}/runs/{run_id}" + (f"/artifacts/{artifact}" if artifact else "")


def ui_url(experiment_id: str, run_id: str | None = None, address: str = UI_ADDRESS) -> str:
    """A URL that opens a run, or the experiment's runs in the sweep view, in model-training mode."""
    view = "" if run_id else f"&viewStateShareKey={RUNS_VIEW_KEY}"
    return f"{address}/#{run_path(experiment_id, run_id)}?{MODEL_TRAINING_QUERY}{view}"


def _cell(value: object) -> str:
    return format_value(value).replace("|", "\\|")  # a Markdown table cell


def parent_note(sweep: dict, trials: list[dict], rows: int | None = None) -> str:
    """The parent run's description (Markdown). `sweep`: experiment, experiment_id, run_id, search, scheduler,
    searched and, once the best trial's model is known, model_uri. `trials`: dicts of run_id, name, outcome and the
    TABLE_METRICS present (final values); `rows`: how many table rows (the best first; default all)."""
    ranked = sorted(trials, key=lambda t: (*R.rank_key(t.get("outcome", "?"), t.get("val_ppl")), t["name"]))
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.get("outcome", "?")] = counts.get(trial.get("outcome", "?"), 0) + 1
    link = lambda t: f"[{t['name']}](#{run_path(sweep['experiment_id'], t['run_id'])}?{MODEL_TRAINING_QUERY})"
    lines = []  # the best trial and the table first: the run page shows the description's first lines
    best = R.best_of(trials, lambda t: t.get("outcome", "?"), lambda t: t.get("val_ppl"))
    if best is not None:
        results = ", ".join(f"{k} {_cell(best[k])}" for k in TABLE_METRICS if k in best)
        lines += [f"**Best trial: {link(best)}** ({best['outcome']}): {results}.", ""]
    if sweep.get("model_uri"):
        lines += [model_section(sweep["model_uri"]), ""]
    metrics = [k for k in TABLE_METRICS if any(k in t for t in trials)]
    lines += ["| trial | outcome | " + " | ".join(metrics) + " |", "|:---|:---|" + "---:|" * len(metrics)]
    lines += [f"| {link(t)} | {t.get('outcome', '?')} | " + " | ".join(_cell(t.get(k)) for k in metrics) + " |"
              for t in ranked[:rows]]
    if len(ranked) > len(ranked[:rows]):
        lines += ["", f"... and {len(ranked) - len(ranked[:rows])} more trials (the report lists them all)."]
    searched = ", ".join(f"`{k}`" for k in sweep["searched"]) or "nothing"
    outcomes = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "none yet"
    lines += ["", f"**Sweep of {searched}**: {sweep['search']} search, {sweep['scheduler']} scheduler; "
                  f"{len(trials)} trials ({outcomes}). Only a completed trial can be the best (a pruned one's "
                  "val_ppl is from a shorter run).", "",
              f"**Report**: `python -m analysis.report --experiment {sweep['experiment']} --run {sweep['run_id']}` "
              "writes it (report.md and its figures) under reports/."]
    return "\n".join(lines) + "\n"


def model_section(uri: str) -> str:
    """Where the best trial's model is and the commands that use it."""
    return (f"**Best model**: `{uri}` (model.safetensors, config.json, tokenizer.json): "
            f"`python -m trainer.generate {uri} --prompt 'The'` continues a prompt, "
            f"`python -m trainer.export {uri} --hf OUT` writes a folder transformers loads as GPT-2 "
            "(both with `--mlflow-uri` naming this store).")


# The MLflow side (a client in, tags out): everything the note says is read back from MLflow, so a resumed sweep
# or a report logged later describes every trial, not only those this driver saw.
NOTE_LIMIT = 8000  # MLflow's longest tag value; a very large sweep lists its best trials and says how many more


def _trial_rows(client, experiment_id: str, run_id: str) -> list[dict]:
    children = client.search_runs([experiment_id], f"tags.`{R.PARENT_RUN_ID}` = '{run_id}'", max_results=10000)
    return [{"run_id": c.info.run_id, "name": c.info.run_name, "outcome": c.data.tags.get(R.OUTCOME, "?"),
             **{k: c.data.metrics[k] for k in TABLE_METRICS if k in c.data.metrics}} for c in children]


def trial_names(client, experiment_id: str, run_id: str) -> set[str]:
    """The names the sweep's trial runs have already (a resumed sweep names its new trials apart from them)."""
    return {t["name"] for t in _trial_rows(client, experiment_id, run_id)}


def describe_sweep(client, run_id: str) -> str:
    """Write the parent run's name, description and trial counts from its child runs; return the note."""
    parent = client.get_run(run_id)
    experiment_id = parent.info.experiment_id
    experiment = client.get_experiment(experiment_id).name
    sweep = {"experiment": experiment, "experiment_id": experiment_id, "run_id": run_id,
             "search": parent.data.params.get("sweep.search", "?"),
             "scheduler": parent.data.params.get("sweep.scheduler", "?"),
             "searched": [k for k in parent.data.tags.get(R.SEARCHED, "").split(",") if k],
             "model_uri": parent.data.tags.get(R.BEST_MODEL_URI)}
    trials = _trial_rows(client, experiment_id, run_id)
    shown = len(trials)
    note = parent_note(sweep, trials)
    while len(note) > NOTE_LIMIT and shown > 1:  # keep the best trials' rows
        shown = shown * 3 // 4
        note = parent_note(sweep, trials, rows=shown)
    client.set_tag(run_id, NOTE_TAG, note)
    client.set_experiment_tag(experiment_id, RUNS_VIEW_TAG, runs_view(sweep["searched"]))
    client.update_run(run_id, name=sweep_run_name(experiment, parent.info.start_time / 1000, len(trials)))
    now = int(time.time() * 1000)
    completed = sum(t["outcome"] == R.COMPLETED for t in trials)
    client.log_batch(run_id, metrics=[Metric("trials", len(trials), now, 0),
                                      Metric("trials_completed", completed, now, 0)])
    return note
