"""The sweep report: pure functions on hand-built frames, bad input, and one tiny real sweep end to end.

    pytest tests/analysis/test_report.py                 (add -m "not slow" to skip the real sweep, ~30 s)
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import figures, tables
from analysis.importance import infer_distribution, param_importances
from analysis.report import build_report, main, plot_keys
from analysis.runs import Sweep, best_trial, clean_curves, trial_rows

SEARCHED = ["optim.lr", "optim.warmup_steps"]


def make_trials(rows: list[tuple]) -> pd.DataFrame:
    """rows of (trial_id, lr, warmup, final_val_ppl, finetune_acc, steps, outcome); max_steps 100."""
    frame = pd.DataFrame(rows, columns=["trial_id", "optim.lr", "optim.warmup_steps", "final_val_ppl",
                                        "finetune_acc", "steps", "outcome"])
    frame["run_id"] = "run-" + frame.trial_id
    frame["run_name"] = frame.trial_id
    frame["status"] = "FINISHED"
    frame["final_val_loss"] = np.log(frame.final_val_ppl)
    frame["final_val_bpb"] = frame.final_val_loss * 0.3  # some tokens-per-byte ratio
    frame["best_val_ppl"] = frame.final_val_ppl
    frame["finetune_acc_fewshot"] = frame.finetune_acc - 0.1
    frame["max_steps"] = 100
    return frame


@pytest.fixture
def grid_trials() -> pd.DataFrame:
    rows, i = [], 0
    for lr in (1e-4, 1e-3, 1e-2):
        for warmup in (0, 10):
            ppl = 200 - 50 * math.log10(lr / 1e-4) + warmup  # lr matters a lot, warmup a little
            rows.append((f"t{i}", lr, warmup, ppl, 0.5 + 0.001 * (200 - ppl), 100, "completed"))
            i += 1
    return make_trials(rows)


@pytest.fixture
def asha_trials() -> pd.DataFrame:
    return make_trials([("a", 3e-4, 5, 120.0, 0.61, 100, "completed"), ("b", 1e-3, 20, 90.0, 0.64, 100, "completed"),
                        ("c", 1e-4, 0, 400.0, math.nan, 25, "pruned"), ("d", 2e-4, 10, 300.0, math.nan, 50, "pruned"),
                        ("e", 3e-3, 2, math.nan, math.nan, 30, "diverged")])


def curves_for(trials: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, t in trials.iterrows():
        for step in range(10, int(t.steps) + 1, 10):
            rows.append({"trial_id": t.trial_id, "key": "val_loss", "step": step, "value": 8 - step / 50})
    return pd.DataFrame(rows)


def test_summary_sorted_best_on_top_and_failed_last(asha_trials):
    table = tables.summary_table(asha_trials, SEARCHED)
    assert table.trial_id.tolist() == ["b", "a", "d", "c", "e"]
    assert list(table.columns[:3]) == ["trial_id", *SEARCHED]
    assert {"final val_ppl", "best val_ppl", "finetune_acc", "finetune_acc_fewshot", "steps", "outcome"} <= \
        set(table.columns)


def test_markdown_table_has_every_row_and_formats_missing(asha_trials):
    text = tables.to_markdown(tables.summary_table(asha_trials, SEARCHED))
    lines = text.splitlines()
    assert len(lines) == 2 + len(asha_trials) and lines[1].startswith("|")
    assert "–" in lines[-1] and "diverged" in lines[-1]
    assert tables.format_value(3209.2) == "3209" and tables.format_value(0.000777) == "7.77e-4"


def test_grid_pivot_shape_and_cells(grid_trials):
    pivot = tables.grid_pivot(grid_trials, "optim.lr", "optim.warmup_steps")
    assert pivot.shape == (2, 3)
    assert pivot.columns.tolist() == [1e-4, 1e-3, 1e-2] and pivot.index.tolist() == [0, 10]
    assert pivot.loc[10, 1e-4] == pytest.approx(210)


def test_grid_pivot_leaves_a_diverged_cell_empty(grid_trials):
    grid_trials.loc[0, "outcome"] = "diverged"
    pivot = tables.grid_pivot(grid_trials, "optim.lr", "optim.warmup_steps")
    assert pivot.shape == (2, 3) and math.isnan(pivot.loc[0, 1e-4])


def test_asha_accounting_arithmetic(asha_trials):
    a = tables.asha_accounting(asha_trials)
    assert (a["spent"], a["budget"]) == (305, 500)
    assert a["saving"] == pytest.approx(1 - 305 / 500)
    assert (a["pruned"], a["completed"], a["trials"]) == (2, 2, 5)


def test_correlation_pearson_spearman_and_too_few_points():
    x = pd.Series([100.0, 200.0, 300.0, 400.0])
    c = tables.correlation(x, pd.Series([0.9, 0.8, 0.75, 0.1]))
    assert c["n"] == 4 and c["spearman"] == pytest.approx(-1.0) and -1 < c["pearson"] < -0.8
    few = tables.correlation(x, pd.Series([0.9, math.nan, math.nan, 0.1]))
    assert few["n"] == 2 and math.isnan(few["pearson"])


def test_importance_finds_the_parameter_that_matters(grid_trials):
    result = param_importances(grid_trials, SEARCHED)
    assert set(result.values) == set(SEARCHED)
    assert result.values["optim.lr"] > 0.8 > result.values["optim.warmup_steps"]


def test_importance_skips_with_a_note():
    one = make_trials([("a", 1e-3, 5, 100.0, 0.5, 100, "completed")])
    too_few = param_importances(one, SEARCHED)
    assert too_few.values == {} and "need at least 2" in too_few.note
    same_warmup = make_trials([("a", 1e-3, 5, 100.0, 0.5, 100, "completed"), ("b", 1e-4, 5, 150.0, 0.5, 100, "pruned")])
    skipped = param_importances(same_warmup, SEARCHED)
    assert skipped.values == {} and "vary" in skipped.note


def test_distributions_inferred_from_values():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    lr = infer_distribution(pd.Series([1e-4, 3e-4, 3e-3]))
    assert isinstance(lr, FloatDistribution) and lr.log
    assert not infer_distribution(pd.Series([0.0, 0.1, 0.2])).log
    assert isinstance(infer_distribution(pd.Series([0, 5, 20])), IntDistribution)
    assert isinstance(infer_distribution(pd.Series(["a", "b"])), CategoricalDistribution)


def test_plot_keys_prefer_lr_and_warmup():
    trials = pd.DataFrame({"model.dropout": [0.0, 0.1], "optim.warmup_steps": [1, 2], "optim.lr": [1e-3, 1e-4]})
    assert plot_keys(trials, ["model.dropout", "optim.warmup_steps", "optim.lr"]) == ("optim.lr", "optim.warmup_steps")
    assert plot_keys(trials, ["model.dropout"]) == ("model.dropout", None)


def test_trial_rows_from_search_runs_columns():
    runs = pd.DataFrame([{"run_id": "r1", "status": "FINISHED", "tags.gptsweep.trial_id": "t1",
                          "tags.gptsweep.outcome": "completed", "tags.mlflow.runName": "trial_t1",
                          "params.optim.lr": "0.001", "params.optim.warmup_steps": "10", "metrics.finetune_acc": 0.7,
                          "params.train.max_steps": "20"},
                         {"run_id": "r2", "status": "FAILED", "tags.gptsweep.trial_id": "t2",
                          "tags.gptsweep.outcome": "diverged", "tags.mlflow.runName": "trial_t2",
                          "params.optim.lr": "0.01", "params.optim.warmup_steps": "0", "metrics.finetune_acc": None,
                          "params.train.max_steps": "20"}])
    curves = clean_curves(pd.DataFrame(
        [("t1", "val_loss", 10, 6.0), ("t1", "val_ppl", 10, 403.0), ("t1", "val_loss", 20, 5.0),
         ("t1", "val_ppl", 20, 148.0), ("t2", "val_loss", 10, 7.0), ("t2", "val_ppl", 10, 1097.0),
         ("t2", "val_loss", 20, 1e4), ("t2", "val_ppl", 20, math.exp(50.0))],
        columns=["trial_id", "key", "step", "value"]))
    assert len(curves) == 6  # the diverged placeholders are gone
    rows = trial_rows(runs, SEARCHED, curves).set_index("trial_id")
    assert rows.loc["t1", "optim.warmup_steps"] == 10 and rows.loc["t1", "optim.lr"] == 1e-3
    assert rows.loc["t1", "final_val_ppl"] == 148.0 and rows.loc["t1", "steps"] == rows.loc["t1", "max_steps"] == 20
    assert math.isnan(rows.loc["t2", "final_val_ppl"]) and rows.loc["t2", "best_val_ppl"] == 1097.0
    assert best_trial(rows.reset_index()).trial_id == "t1"


def _is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("search", ["grid", "optuna"])
def test_build_report_offline(tmp_path, grid_trials, asha_trials, search):
    trials = grid_trials if search == "grid" else asha_trials
    floors = {"floor_uniform": 10.8, "floor_unigram": 7.2, "floor_bigram": 6.6}
    sweep = Sweep("lr_warmup", "parent", "lr_warmup-1", "FINISHED", {"sweep.search": search, "sweep.scheduler": "asha"},
                  {}, SEARCHED, trials, curves_for(trials), floors,
                  {trials.trial_id.iloc[0]: "The cat\n\n---\n\nA dog"})
    text, written = build_report(sweep, tmp_path)
    assert all(f"| {t} |" in text for t in trials.trial_id)
    assert {p.name for p in written} == {"search.png", "learning_curves.png", "parallel_coordinates.png",
                                         "ppl_vs_accuracy.png"}
    assert all(_is_png(p) for p in written)
    assert "floor_bigram" in text and "saving of" in text


def test_learning_curves_without_floors_and_figure_width(asha_trials):
    fig = figures.learning_curves(curves_for(asha_trials), asha_trials, {})
    width = fig.get_size_inches()[0] * figures.DPI
    assert width <= 1100 and fig.axes[0].get_xlabel() == "training step"


def test_scatter_of_an_unfinished_sweep_shows_its_running_trials(asha_trials):
    """A report taken while trials still run: their latest val_ppl is plotted (no completed trial needed)."""
    running = asha_trials.assign(outcome=["running", "interrupted", "running", "pruned", "diverged"])
    fig = figures.search_scatter(running, "optim.lr", "optim.warmup_steps")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["pruned (ASHA) (1)", "unfinished (3)", "diverged/error (1)"]
    assert len(fig.axes) == 2  # the val_ppl colour bar
    nothing_finished = figures.search_scatter(asha_trials.assign(outcome="running"), "optim.lr", "optim.warmup_steps")
    assert nothing_finished.axes[0].get_legend_handles_labels()[1] == ["unfinished (4)"]  # e has no val_ppl yet


def test_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--experiment", "lr_warmup"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no MLflow database at") and len(err.splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()  # not created by asking


@pytest.fixture
def finished_ray():
    yield
    import ray

    ray.shutdown()


@pytest.mark.slow
def test_tiny_sweep_then_report(tmp_path, tiny_corpus, monkeypatch, capsys, finished_ray):
    from mlflow.tracking import MlflowClient

    from sweeps.lr_warmup import space
    from sweeps.engine.launch import run_sweep

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run_sweep("lr_warmup", space, ["--preset", "smoke", "--data", str(tiny_corpus), "--tokenizer", "bpe:300",
                                          "--finetune-train", "none", "--num-samples", "3",
                                          "--storage", str(tmp_path / "ray"), "--mlflow-uri", uri]) == 0
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("lr_warmup").experiment_id],
                                "tags.`gptsweep.role` = 'sweep'")[0]
    assert main(["--experiment", "lr_warmup", "--mlflow-uri", uri]) == 0
    after = client.get_run(parent.info.run_id)  # the report only reads MLflow
    assert (after.data.tags, after.data.metrics, after.info.run_name) == \
        (parent.data.tags, parent.data.metrics, parent.info.run_name)
    assert not client.list_artifacts(parent.info.run_id)
    folder = parent.data.tags["gptsweep.sweep_path"].rsplit("/", 1)[-1]  # lr_warmup_<date>-<time>, no spaces
    report = tmp_path / "reports" / "lr_warmup" / folder / "report.md"
    text = report.read_text()
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 3 and all(c.data.tags["gptsweep.trial_id"] in text for c in children)
    pngs = sorted(report.parent.glob("*.png"))
    assert {"search.png", "learning_curves.png"} <= {p.name for p in pngs} and all(_is_png(p) for p in pngs)

    # bad input on the same store: unknown experiment, unknown run, a run that is not a sweep
    capsys.readouterr()
    assert main(["--experiment", "nope", "--mlflow-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "no experiment 'nope'" in err and "lr_warmup" in err  # the message lists the ones there are
    client.create_experiment("empty")
    assert main(["--experiment", "empty", "--mlflow-uri", uri]) == 2
    assert "has no sweep runs" in capsys.readouterr().err
    assert main(["--experiment", "lr_warmup", "--mlflow-uri", uri, "--run", "0" * 32]) == 2
    assert "no run with id" in capsys.readouterr().err
    assert main(["--experiment", "lr_warmup", "--mlflow-uri", uri, "--run", children[0].info.run_id]) == 2
    assert "not a sweep" in capsys.readouterr().err


def test_report_of_a_sweep_without_trials_or_with_text_values(tmp_path, asha_trials):
    from analysis.runs import TRIAL_COLUMNS

    empty = Sweep("x", "p", "x-1", "RUNNING", {}, {}, SEARCHED, pd.DataFrame(columns=[*TRIAL_COLUMNS, *SEARCHED]),
                  pd.DataFrame(columns=["trial_id", "key", "step", "value"]))
    text, written = build_report(empty, tmp_path / "empty")
    assert "No trial runs" in text and written == []
    trials = asha_trials.assign(**{"model.act": ["gelu", "relu", "gelu", "relu", "gelu"]})
    for search in ("grid", "random"):
        sweep = Sweep("x", "p", "x-1", "FINISHED", {"sweep.search": search}, {}, ["model.act", "optim.warmup_steps"],
                      trials, curves_for(trials))
        text, written = build_report(sweep, tmp_path / search)
        assert "| gelu |" in text and all(_is_png(p) for p in written)


def test_grid_spread_gives_mean_std_and_count_of_repeats():
    from analysis.tables import grid_spread

    trials = make_trials([("a", 1e-3, 0, 100.0, 0.5, 100, "completed"), ("b", 1e-3, 0, 110.0, 0.5, 100, "completed"),
                          ("c", 3e-3, 0, 90.0, 0.5, 100, "completed"), ("d", 3e-3, 0, 5.0, 0.5, 10, "diverged")])
    row = grid_spread(trials, "optim.lr", "optim.warmup_steps").iloc[0]
    assert row[1e-3] == "105.0 ± 7.1 (2)" and row[3e-3] == "90"  # the diverged repeat is no measurement
