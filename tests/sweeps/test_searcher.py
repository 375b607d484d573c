"""pytest tests/sweeps/test_searcher.py — what Optuna hears from a sweep (sweeps/engine/searcher.py), trial by trial,
without Ray running: intermediate values at the training step, an early-stopped trial PRUNED with its real curve,
a diverged one COMPLETE with the finite placeholder, an errored one FAIL; and the sampler's settings.
"""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from ray import tune

from sweeps.engine.searcher import optuna_search, startup_trials
from trainer.result_schema import DIVERGED_LOSS

MAX_STEPS = 12


@pytest.fixture
def searcher():
    searcher = optuna_search(seed=0, num_samples=6, storage_url=None, study_name="unit")
    searcher.set_search_properties("val_loss", "min", {"optim.lr": tune.loguniform(1e-4, 1e-2)})
    return searcher


def report(searcher, trial_id: str, *steps_and_losses: tuple[int, float]) -> None:
    for step, loss in steps_and_losses:
        searcher.on_trial_result(trial_id, {"step": step, "val_loss": loss, "max_steps": MAX_STEPS})


def study_trial(searcher, trial_id: str) -> optuna.trial.FrozenTrial:
    # The study itself: OptunaSearch has no public accessor.
    return searcher._ot_study.trials[searcher._ot_trials[trial_id].number]


def test_a_trial_stopped_early_is_pruned_with_its_curve_at_the_training_steps(searcher):
    searcher.suggest("asha-stopped")
    report(searcher, "asha-stopped", (4, 5.0))
    searcher.on_trial_complete("asha-stopped", {"step": 8, "val_loss": 4.5, "max_steps": MAX_STEPS})
    trial = study_trial(searcher, "asha-stopped")
    assert trial.state == TrialState.PRUNED and trial.value == 4.5  # Optuna: a pruned trial's last report
    assert trial.intermediate_values == {4: 5.0, 8: 4.5}  # the last report too, at its step, not the iteration


def test_a_trial_that_ran_to_max_steps_is_complete_with_its_last_value(searcher):
    searcher.suggest("finished")
    report(searcher, "finished", (4, 5.0), (8, 4.0))
    searcher.on_trial_complete("finished", {"step": MAX_STEPS, "val_loss": 3.5, "max_steps": MAX_STEPS})
    trial = study_trial(searcher, "finished")
    assert trial.state == TrialState.COMPLETE and trial.value == 3.5
    assert trial.intermediate_values == {4: 5.0, 8: 4.0, 12: 3.5}


def test_a_diverged_trial_is_complete_with_the_finite_placeholder(searcher):
    searcher.suggest("diverged")
    report(searcher, "diverged", (4, 5.0))
    searcher.on_trial_complete("diverged", {"step": 6, "val_loss": DIVERGED_LOSS, "diverged": 1,
                                            "max_steps": MAX_STEPS})
    trial = study_trial(searcher, "diverged")
    assert trial.state == TrialState.COMPLETE and trial.value == DIVERGED_LOSS  # TPE learns the region is bad


def test_an_errored_trial_fails(searcher):
    searcher.suggest("errored")
    report(searcher, "errored", (4, 5.0))
    searcher.on_trial_complete("errored", {"step": 4, "val_loss": 5.0, "max_steps": MAX_STEPS}, error=True)
    trial = study_trial(searcher, "errored")
    assert trial.state == TrialState.FAIL and trial.value is None


def test_a_replayed_step_is_reported_once_and_a_second_end_is_ignored(searcher):
    searcher.suggest("restarted")
    report(searcher, "restarted", (4, 5.0), (8, 4.0), (8, 9.0))  # Tune restarted it from its step-4 checkpoint
    searcher.on_trial_complete("restarted", {"step": MAX_STEPS, "val_loss": 3.0, "max_steps": MAX_STEPS})
    searcher.on_trial_complete("restarted", None, error=True)
    trial = study_trial(searcher, "restarted")
    assert trial.intermediate_values == {4: 5.0, 8: 4.0, 12: 3.0}
    assert trial.state == TrialState.COMPLETE and trial.value == 3.0


def test_the_sampler_is_multivariate_tpe_with_a_constant_liar_and_a_third_for_startup(searcher):
    sampler = searcher._ot_study.sampler
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate and sampler._constant_liar  # lr and warmup interact; concurrent trials differ
    assert sampler._n_startup_trials == startup_trials(6) == 2
    assert [startup_trials(n) for n in (1, 4, 6, 16, 30)] == [2, 2, 2, 5, 10]


def test_the_study_is_kept_in_its_database_under_the_sweeps_name(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = optuna_search(seed=0, num_samples=4, storage_url=storage, study_name="lr_warmup_1")
    searcher.set_search_properties("val_loss", "min", {"optim.lr": tune.loguniform(1e-4, 1e-2)})
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"step": MAX_STEPS, "val_loss": 3.0, "max_steps": MAX_STEPS})
    study = optuna.load_study(study_name="lr_warmup_1", storage=storage)
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 3.0)]


def test_progress_results_do_not_reach_optuna():
    from ray import tune

    from sweeps.engine.searcher import optuna_search

    searcher = optuna_search(seed=0, num_samples=4, storage_url=None, study_name="progress")
    searcher.set_search_properties("val_loss", "min", {"optim.lr": tune.loguniform(1e-4, 1e-2)})
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"step": 3, "train_loss": 2.0})  # would be a KeyError in OptunaSearch
    searcher.on_trial_result("t1", {"step": 4, "train_loss": 2.0, "val_loss": 1.5})
    assert searcher._ot_study.trials[0].intermediate_values == {4: 1.5}  # the eval only

