"""pytest tests/sweeps/test_plan.py — what a sweep's plan decides before Ray starts: ASHA's axis, grace and rungs,
the scheduler Tune gets. (The searcher's settings: test_searcher.py.)

    pytest tests/sweeps/test_plan.py -q
"""
from __future__ import annotations

import pytest
from ray.tune.schedulers import ASHAScheduler

from sweeps.engine.launch import _scheduler
from sweeps.engine.plan import REDUCTION_FACTOR, grace_steps, make_plan
from sweeps.lr_warmup import space as lr_warmup


def _plan(name: str, space, tiny_corpus, *extra: str):
    return make_plan(name, space, ["--preset", "smoke", "--data", str(tiny_corpus), "--tokenizer", "bpe:300",
                                   "--finetune-train", "none", *extra], "optuna")


def test_asha_counts_steps_unless_the_space_changes_the_tokens_of_a_step(tiny_corpus):
    from sweeps.asha_search import space as broad

    plan = _plan("lr_warmup", lr_warmup, tiny_corpus)
    assert plan.time_attr == "step" and plan.asha_budget() == (plan.cfg.train.max_steps, plan.grace_steps)
    plan = _plan("asha_search", broad, tiny_corpus)  # searches train.batch_size over 8, 16 and 32
    tokens_per_step = plan.cfg.train.batch_size * plan.cfg.model.context_length
    assert plan.time_attr == "tokens"
    assert plan.asha_budget() == (plan.cfg.train.max_steps * 32 * plan.cfg.model.context_length,
                                  plan.grace_steps * tokens_per_step)


def test_asha_grace_is_a_quarter_of_the_run_and_it_keeps_the_top_half():
    assert [grace_steps(n) for n in (12, 600, 2000, 2, 1)] == [3, 150, 500, 1, 1]
    assert REDUCTION_FACTOR == 2


def test_tune_gets_asha_on_training_steps_with_that_grace_and_halving(tiny_corpus):
    plan = _plan("lr_warmup", lr_warmup, tiny_corpus)  # smoke: 12 steps
    assert (plan.search, plan.scheduler, plan.grace_steps) == ("optuna", "asha", 3)
    scheduler = _scheduler(plan)
    assert isinstance(scheduler, ASHAScheduler) and scheduler._time_attr == "step" and scheduler._max_t == 12
    (bracket,) = scheduler._brackets
    assert bracket.rf == 2 and sorted(milestone for milestone, _ in bracket._rungs) == [3, 6, 12]


@pytest.mark.parametrize("extra", [("--search", "grid"), ("--scheduler", "fifo")])
def test_grid_search_and_fifo_get_no_early_stopping(tiny_corpus, extra):
    plan = _plan("lr_warmup", lr_warmup, tiny_corpus, *extra)
    assert plan.scheduler == "fifo" and _scheduler(plan) is None


def test_the_cpu_sweep_judges_once_at_half_the_run(tiny_corpus):
    # 5 trials, one rung at half the run (the first to reach it always goes on).
    plan = make_plan("lr_warmup", lr_warmup, ["--preset", "cpu", "--data", str(tiny_corpus), "--tokenizer", "bpe:300",
                                              "--finetune-train", "none"], "optuna")
    assert (plan.num_samples, plan.grace_steps) == (5, plan.cfg.train.max_steps // 2)
    (bracket,) = _scheduler(plan)._brackets
    assert sorted(milestone for milestone, _ in bracket._rungs) == [900, 1800]


def test_lr_warmup_searches_around_the_presets_lr(tiny_corpus):
    for preset in ("cpu", "seed"):
        plan = make_plan("lr_warmup", lr_warmup, ["--preset", preset, "--data", str(tiny_corpus), "--tokenizer",
                                                  "bpe:300", "--finetune-train", "none"], "optuna")
        lr, searched = plan.cfg.optim.lr, plan.dims["optim.lr"]
        assert searched.grid == pytest.approx((lr / 3, lr, lr * 3))
        assert (searched.domain.lower, searched.domain.upper) == pytest.approx((lr / 3, lr * 3))
