"""LR transfer across width: optima, drift, power-law fit, the figure, the sweep's grid, and analysis.transfer on a
real MLflow store.

    pytest tests/analysis/test_transfer.py
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import transfer_fit as lr_transfer
from analysis.transfer import main

WIDTHS = (16, 32, 64, 128)
LRS = tuple(1e-3 * 2 ** k for k in range(6))


def synthetic_table() -> pd.DataFrame:
    """Val loss a parabola in log2 lr: SP's optimum ∝ 1/width (8e-3 at width 16), μP's fixed at 4e-3."""
    rows = []
    for param in ("sp", "mup"):
        for width in WIDTHS:
            best = 8e-3 * 16 / width if param == "sp" else 4e-3
            for lr in LRS:
                loss = 5 - 0.1 * math.log2(width) + 0.05 * math.log2(lr / best) ** 2
                rows.append({"parametrization": param, "width": width, "lr": lr, "val_loss": loss})
    return pd.DataFrame(rows)


def test_optima_drift_gap_and_refinement():
    table = synthetic_table()
    table.loc[(table.parametrization == "sp") & (table.width == 16) & (table.lr == LRS[-1]), "val_loss"] = math.nan
    optima = lr_transfer.optimal_lrs(table)
    sp = optima[optima.parametrization == "sp"].set_index("width")
    assert sp.opt_lr.to_dict() == {16: 8e-3, 32: 4e-3, 64: 2e-3, 128: 1e-3}
    assert sp.at_edge.to_dict() == {16: False, 32: False, 64: False, 128: True}
    assert np.allclose(optima[optima.parametrization == "mup"].opt_lr_refined, 4e-3)  # exact for a parabola
    assert lr_transfer.drift_log2(optima, "sp") == pytest.approx(3.0)
    assert lr_transfer.drift_log2(optima, "mup") == 0.0
    assert lr_transfer.transfer_gap(table, optima, "mup") == 0.0
    gap = lr_transfer.transfer_gap(table, optima, "sp")  # width 128 at 8e-3: 3 grid steps off its optimum
    assert gap == pytest.approx(0.05 * 9 / (5 - 0.7))


def test_power_law_recovers_the_exponent_and_predicts():
    fit = lr_transfer.power_law([16, 32, 64, 128], [8e-3 * 16 / w * f for w, f in zip(WIDTHS, (1, 1.1, 0.9, 1))])
    assert fit["exponent"] == pytest.approx(-1.0, abs=0.1) and 0 < fit["exponent_se"] < 0.2
    lr, factor = lr_transfer.predict(fit, 1024)
    assert 1e-4 < lr < 2e-4 and 1.0 < factor < 2.0
    with pytest.raises(ValueError):
        lr_transfer.power_law([64], [1e-3])


def test_transfer_figure_has_a_panel_per_parametrization():
    fig = lr_transfer.transfer_figure(synthetic_table())
    assert [ax.get_title() for ax in fig.axes] == ["standard parametrization (SP)", "μP"]
    assert fig.get_size_inches()[0] * 110 <= 1100


def test_lr_transfer_grid_builds_at_every_corner():
    from sweeps.lr_transfer import space
    from trainer.config import build_config

    dims = space(build_config("cpu"))
    assert dims["model.d_model"].grid == (32, 64, 128, 256) and dims["model.parametrization"].grid == ("sp", "mup")
    lrs = dims["optim.lr"].grid
    assert len(lrs) == 6 and all(b / a == pytest.approx(2) for a, b in zip(lrs, lrs[1:]))
    assert dims["model.base_width"].grid == (128,)


def _store(tmp_path, table: pd.DataFrame) -> str:
    """A real MLflow sqlite store laid out as sweeps/lr_transfer.py writes one: a parent and a child per trial."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("lr_transfer")
    searched = "optim.lr,model.d_model,model.parametrization,model.base_width"
    parent = client.create_run(exp, run_name="lr_transfer-1", tags={"gptsweep.role": "sweep",
                                                                     "gptsweep.searched": searched}).info.run_id
    for key, value in {"sweep.preset": "cpu", "model.n_heads": "2", "data.source": "wikitext-2",
                       "sweep.search": "grid"}.items():
        client.log_param(parent, key, value)
    for i, row in table.iterrows():
        child = client.create_run(exp, run_name=f"t{i}", tags={"mlflow.parentRunId": parent, "gptsweep.role": "trial",
                                                               "gptsweep.trial_id": f"t{i}",
                                                               "gptsweep.outcome": "completed"}).info.run_id
        params = {"optim.lr": row.lr, "model.d_model": row.width, "model.parametrization": row.parametrization,
                  "model.base_width": 16}
        client.log_batch(child, params=[Param(k, str(v)) for k, v in params.items()],
                         metrics=[Metric("val_loss", row.val_loss, 0, 100), Metric("val_ppl", math.exp(row.val_loss), 0, 100)])
        client.set_terminated(child)
    return uri


@pytest.mark.slow  # ~10 s of MLflow (sqlite schema, 30 runs written and read back)
def test_transfer_cli_recommends_mup_lr_and_an_sp_power_law(tmp_path, capsys):
    table = synthetic_table()
    uri = _store(tmp_path, table[(table.width <= 64) & (table.lr <= LRS[4])])  # 30 trials: enough, and quicker
    assert main(["--experiment", "lr_transfer", "--width", "512", "--mlflow-uri", uri]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[1].startswith("mup: optim.lr=0.004 ")
    assert out[2].startswith("sp: optim.lr=") and "width^-1.00" in out[2] and "extrapolated" in out[2]
    assert float(out[2].split("=")[1].split()[0]) == pytest.approx(2.5e-4, rel=0.01)
    assert out[-1] == ("python -m trainer --preset cpu --set model.n_heads=2 --set model.d_model=512 "
                       "--set model.n_layers=2 --set model.parametrization=mup --set optim.lr=0.004 "
                       "--set model.base_width=16")
    # bad input: a width the head count does not divide, a negative width; one line each, exit 2
    assert main(["--experiment", "lr_transfer", "--width", "511", "--mlflow-uri", uri]) == 2
    assert main(["--experiment", "lr_transfer", "--width", "-4", "--mlflow-uri", uri]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "not divisible by model.n_heads=2" in errors[0] and "--width -4" in errors[1]


def test_report_gets_the_transfer_section_only_for_a_transfer_sweep(tmp_path):
    from analysis.report import build_report
    from analysis.runs import TRIAL_COLUMNS, Sweep

    table = synthetic_table()
    searched = ["optim.lr", "model.d_model", "model.parametrization"]
    trials = pd.DataFrame({"trial_id": [f"t{i}" for i in table.index], "run_id": "r", "run_name": "n",
                           "outcome": "completed", "status": "FINISHED", "final_val_loss": table.val_loss,
                           "final_val_ppl": np.exp(table.val_loss), "best_val_ppl": np.exp(table.val_loss),
                           "finetune_acc": math.nan, "finetune_acc_fewshot": math.nan, "steps": 100,
                           "max_steps": 100, "optim.lr": table.lr, "model.d_model": table.width,
                           "model.parametrization": table.parametrization}).reindex(columns=[*TRIAL_COLUMNS, *searched])
    curves = pd.DataFrame(columns=["trial_id", "key", "step", "value"])
    sweep = Sweep("lr_transfer", "p", "lr_transfer-1", "FINISHED", {"sweep.search": "grid"}, {}, searched, trials,
                  curves)
    text, written = build_report(sweep, tmp_path)
    assert "lr_transfer.png" in {p.name for p in written} and "coord_check.png" not in {p.name for p in written}
    assert "| mup | 128 | 0.004 |" in text and "- sp: drift |log2(opt lr widest / narrowest)| = 3.00" in text
    plain = Sweep("lr_warmup", "p", "x-1", "FINISHED", {}, {}, ["optim.lr"], trials[[*TRIAL_COLUMNS, "optim.lr"]],
                  curves)
    assert "transfer" not in build_report(plain, tmp_path / "plain")[0].split("---")[0]
