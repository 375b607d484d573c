"""The compute ledger, the L(N, D) fit and its refusals, the scaling sweep's sizes, end to end through MLflow.

    pytest tests/analysis/test_scaling_law.py
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from analysis.scaling_law_fit import (LawFit, bootstrap, check_fittable, family_flops_per_token, fit_law, interval,
                                  optimal_allocation)
from trainer.compute import ComputeLedger, flops_per_token
from trainer.config import ConfigError, ModelConfig, build_config, config_from_params, flatten
from trainer.sizes import shape_for, size_params

from tests.support import REPO


def test_ledger_flops_match_a_hand_count_for_a_tiny_model():
    # 1 layer, d 8, vocab 16, context 4. Matmul weights: qkv 3·8·8 = 192, attention proj 64, MLP 8·32 = 256
    # and 32·8 = 256, output layer 16·8 = 128: 896. 6 · 896 = 5,376; attention 12 · 1 · 4 · 8 = 384.
    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=8, context_length=4, dropout=0.0, vocab_size=16)
    ledger = ComputeLedger.of(cfg, batch_size=3)
    assert ledger.flops_per_token == 5_760
    # Non-embedding: qkv 192+24, proj 64+8, fc 256+32, proj 256+8, two LayerNorms 32, final LayerNorm 16.
    assert ledger.n_params_non_embedding == 888
    assert ledger.n_params == 888 + 16 * 8 + 4 * 8
    entry = ledger.at(step=5, wall_s=2.0, device_s=1.5)
    assert entry["tokens"] == 5 * 3 * 4 and entry["flops"] == 60 * 5_760


def test_ledger_counts_the_parameters_the_model_has():
    from trainer.model import GPT

    cfg = ModelConfig(n_layers=2, n_heads=2, d_model=24, context_length=8, dropout=0.0, vocab_size=50)
    model = GPT(cfg)
    ledger = ComputeLedger.of(cfg, batch_size=1)
    tables = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    assert ledger.n_params == model.num_parameters()
    assert ledger.n_params_non_embedding == model.num_parameters() - tables


def test_every_eval_carries_cumulative_tokens_and_flops(smoke_trainer):
    trainer = smoke_trainer(**{"train.max_steps": 8, "train.eval_every": 4})
    trainer.run()
    per_step = trainer.cfg.train.batch_size * trainer.cfg.model.context_length
    assert [h["tokens"] for h in trainer.history] == [4 * per_step, 8 * per_step]
    assert [h["flops"] for h in trainer.history] == [h["tokens"] * trainer.ledger.flops_per_token
                                                     for h in trainer.history]
    assert 0 < trainer.history[0]["device_s"] < trainer.history[1]["device_s"] <= trainer.history[1]["wall_s"]


TRUE = LawFit(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)  # Hoffmann et al. 2022


def synthetic_runs(noise: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(1e7, 1e9, 5), 4)
    d = np.tile(np.geomspace(1e9, 3e10, 4), 5)
    return n, d, TRUE.predict(n, d) * np.exp(rng.normal(0, noise, len(n)))


def test_fit_recovers_known_parameters_from_noisy_runs():
    n, d, loss = synthetic_runs(noise=0.003)
    fit, starts = fit_law(n, d, loss)
    assert abs(fit.alpha - TRUE.alpha) < 0.03 and abs(fit.beta - TRUE.beta) < 0.05
    assert abs(fit.E / TRUE.E - 1) < 0.05
    boots = bootstrap(n, d, loss, starts, samples=40)
    for name in ("E", "alpha", "beta"):  # 98 %: three 90 % intervals all cover the truth only ~73 % of the time
        low, high = interval([getattr(b, name) for b in boots], level=0.98)
        assert low <= getattr(TRUE, name) <= high, name
    assert np.max(np.abs(fit.predict(n, d) / loss - 1)) < 0.015


def test_compute_optimal_point_matches_the_closed_form_under_6nd():
    # With C = 6·N·D, Hoffmann et al.'s closed form: N_opt = G (C/6)^(β/(α+β)), G = (αA / βB)^(1/(α+β)).
    c, a, b = 1e21, TRUE.alpha, TRUE.beta
    g = (a * TRUE.A / (b * TRUE.B)) ** (1 / (a + b))
    n_opt, d_opt, _ = optimal_allocation(TRUE, c, lambda n: 6 * n)
    assert n_opt == pytest.approx(g * (c / 6) ** (b / (a + b)), rel=1e-3)
    assert 6 * n_opt * d_opt == pytest.approx(c)


def test_family_flops_per_token_is_the_ledgers_for_a_shape_of_that_aspect():
    per_token = family_flops_per_token(vocab_size=1024, context_length=64, aspect=32)
    n = 12 * 2 * 64 ** 2  # 2 layers of width 64, aspect 32 (biases and LayerNorms left out of N here)
    assert per_token(n) == pytest.approx(flops_per_token(64, 2, 1024, 64))


@pytest.mark.parametrize("n, d, message", [
    ([1e4, 2e4, 4e4] * 3, [1e5] * 9, "single token budget"),
    ([1e4, 2e4] * 3, [1e5, 1e5, 2e5, 2e5, 4e5, 4e5], "2 model size(s) × 3 token budget(s)"),
    ([1e4, 2e4, 4e4] * 2, [1e5] * 3 + [2e5] * 3, "3 model size(s) × 2 token budget(s)"),
])
def test_fit_refuses_what_it_cannot_fit_honestly(n, d, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_fittable(np.array(n), np.array(d))
    with pytest.raises(ConfigError):
        fit_law(n, d, np.full(len(n), 3.0))


def test_a_mapping_param_sets_several_fields_at_once():
    smoke = flatten(build_config("smoke"))
    cfg = config_from_params({**smoke, "scaling.model": size_params(64, 2), "train.max_steps": 30})
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads) == (64, 2, 4)
    assert cfg.optim.lr == pytest.approx(4e-3) and cfg.optim.lr * cfg.optim.min_lr_ratio == pytest.approx(4e-4)


def test_shape_for_a_parameter_count_comes_near_it():
    from trainer.compute import non_embedding_params

    for target in (3e4, 1e6, 8.5e7):
        d_model, n_layers = shape_for(target)
        assert abs(np.log(non_embedding_params(d_model, n_layers) / target)) < 0.2
        assert 16 <= d_model / n_layers <= 128


def test_the_scaling_sweep_spans_five_sizes_and_ten_times_the_parameters():
    from sweeps.scaling import space
    from trainer.compute import non_embedding_params
    from trainer.config import build_config

    dims = space(build_config("cpu"))
    sizes = [non_embedding_params(s["model.d_model"], s["model.n_layers"]) for s in dims["scaling.model"].grid]
    steps = [b["train.max_steps"] for b in dims["scaling.budget"].grid]
    assert len(set(sizes)) >= 5 and max(sizes) / min(sizes) >= 10
    assert len(set(steps)) >= 3 and all(b["optim.warmup_steps"] < b["train.max_steps"]
                                        for b in dims["scaling.budget"].grid)


@pytest.mark.slow
def test_scaling_sweep_to_a_recommendation_through_mlflow(tmp_path, tiny_corpus):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = [sys.executable, str(REPO / "sweeps" / "scaling.py"), "--preset", "smoke", "--data", str(tiny_corpus),
             "--tokenizer", "bpe:300", "--finetune-train", "none", "--mlflow-uri", uri,
             "--storage", str(tmp_path / "ray"), "--max-concurrent", "2"]
    done = subprocess.run(sweep, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = subprocess.run([sys.executable, "-m", "analysis.scaling_law", "--mlflow-uri", uri, "--bootstraps", "20",
                             "--budget-flops", "1e12", "--out", str(tmp_path / "fig")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "15 runs, 5 sizes × 3 token budgets" in report.stdout
    assert "python -m trainer --preset smoke" in report.stdout and "--set model.d_model=" in report.stdout
    assert all((tmp_path / "fig" / f).stat().st_size > 10_000 for f in ("isoflop.png", "surface.png", "frontier.png"))
    refused = subprocess.run([sys.executable, "-m", "analysis.scaling_law", "--mlflow-uri", uri, "--budget-flops", "-1"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1


def test_sweep_totals_count_what_early_stopping_saved():
    import pandas as pd

    from analysis.tables import compute_totals

    trials = pd.DataFrame({"flops": [100.0, 40.0], "tokens": [10.0, 4.0], "device_s": [2.0, 1.0],
                           "steps": [10, 4], "max_steps": [10, 10]})  # the second stopped at 4 of its 10 steps
    totals = compute_totals(trials)
    assert (totals["flops"], totals["tokens"], totals["device_s"], totals["planned_flops"]) == (140, 14, 3, 200)
