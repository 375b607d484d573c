"""The searchers: Optuna TPE that tells Optuna the truth, persisted in its own database; grid and random search.

    python sweeps/lr_warmup.py                 # TPE (multivariate) + ASHA; the study lands in optuna.db
    optuna-dashboard sqlite:////abs/path/optuna.db

Ray's OptunaSearch reports intermediate values at `training_iteration` and tells Optuna that a trial ASHA
stopped early COMPLETED with its short-run value, so TPE models truncated runs as finished ones. Here the
intermediate values are reported at the training step, and a trial that stopped before its `max_steps` is told
PRUNED (Optuna's TPE then ranks it by its last intermediate value, as it does for its own pruned trials).
A diverged trial stays COMPLETE with its finite placeholder value (trainer.result_schema.DIVERGED_LOSS): TPE learns
that region is bad, and Optuna never waits on a NaN.
"""
from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch

from trainer.result_schema import COMPLETED, DIVERGED, outcome_of, study_location


def startup_trials(num_samples: int) -> int:
    """Random proposals before TPE models the results: a third of the budget, at least 2 (Optuna's default of 10
    would leave a 6-trial sweep pure random search)."""
    return max(2, num_samples // 3)


def study_storage(tracking_uri: str, sweep_path: str) -> str | None:
    """Optuna's RDB storage URL (trainer.result_schema.study_location); None (in memory) for a remote sweep folder."""
    location = study_location(tracking_uri, sweep_path)
    if location is None:
        return None
    location[0].parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{location[0]}"


class TruthfulOptunaSearch(OptunaSearch):
    """OptunaSearch with intermediate values at the training step and the true final state of every trial.
    Each result must carry `step` and `max_steps` (sweeps.engine.trainable reports both)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or self.metric not in result:
            return  # a progress report between evals carries no validation loss
        self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict) -> None:
        reported = self.__dict__.setdefault("_reported_steps", {}).setdefault(trial_id, set())
        step = int(result["step"])
        if step not in reported:  # a trial restarted from a checkpoint replays steps Optuna has already
            reported.add(step)
            self._ot_trials[trial_id].report(float(result[self.metric]), step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        trial = self._ot_trials[trial_id]
        outcome = outcome_of(result) if result and not error else None
        if outcome is not None and self.metric in result:  # Tune hands the last report to this method alone
            self._report(trial_id, result)
        if outcome in (COMPLETED, DIVERGED):
            self._ot_study.tell(trial, float(result[self.metric]), state=optuna.trial.TrialState.COMPLETE)
        elif outcome is None:
            self._ot_study.tell(trial, None, state=optuna.trial.TrialState.FAIL)
        else:  # pruned by ASHA, or stopped by an interrupt: its curve so far is what Optuna gets
            self._ot_study.tell(trial, None, state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def optuna_search(seed: int, num_samples: int, storage_url: str | None, study_name: str) -> TruthfulOptunaSearch:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # multivariate: lr and warmup interact; constant_liar: concurrent trials do not get the same proposal
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(num_samples), multivariate=True,
                                         constant_liar=True)
    storage = optuna.storages.RDBStorage(storage_url) if storage_url else None
    return TruthfulOptunaSearch(sampler=sampler, storage=storage, study_name=study_name)
