"""pytest tests/test_plan.py — what a sweep's plan decides before Ray starts: the searcher's startup, ASHA's axis.

    pytest tests/test_plan.py -q
"""
from __future__ import annotations

from sweeps.engine.plan import make_plan
from sweeps.engine.searcher import startup_trials


def _plan(name: str, space, tiny_corpus, *extra: str):
    return make_plan(name, space, ["--preset", "smoke", "--data", str(tiny_corpus), "--tokenizer", "bpe:300",
                                   "--finetune-train", "none", *extra], "optuna")


def test_tpe_starts_modelling_after_a_third_of_a_small_budget():
    assert [startup_trials(n) for n in (1, 4, 6, 16, 30)] == [2, 2, 2, 5, 10]


def test_asha_counts_steps_unless_the_space_changes_the_tokens_of_a_step(tiny_corpus):
    from sweeps.asha_search import space as broad
    from sweeps.lr_warmup import space as lr_warmup

    plan = _plan("lr_warmup", lr_warmup, tiny_corpus)
    assert plan.time_attr == "step" and plan.asha_budget() == (plan.cfg.train.max_steps, plan.grace_steps)
    plan = _plan("asha_search", broad, tiny_corpus)  # searches train.batch_size over 8, 16 and 32
    tokens_per_step = plan.cfg.train.batch_size * plan.cfg.model.context_length
    assert plan.time_attr == "tokens"
    assert plan.asha_budget() == (plan.cfg.train.max_steps * 32 * plan.cfg.model.context_length,
                                  plan.grace_steps * tokens_per_step)
