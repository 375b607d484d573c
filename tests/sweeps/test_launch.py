"""pytest tests/sweeps/test_launch.py — a sweep's exit code from its trials' results (sweeps/engine/launch.py):
0 when any trial produced a result, diverged ones included; 1 with one line naming the first error when every
trial errored.
"""
from __future__ import annotations

from ray.tune import Result

from sweeps.engine.console_text import exit_code
from trainer.result_schema import DIVERGED_LOSS


class Results(list):
    """A ResultGrid as far as the exit code reads one: its results and the experiment's folder."""
    experiment_path = "/sweeps/lr_warmup_1"


def result(metrics: dict | None, error: Exception | None = None) -> Result:
    return Result(metrics=metrics, checkpoint=None, error=error, path="/sweeps/lr_warmup_1/trial")


def test_a_sweep_whose_trials_all_errored_exits_1_naming_the_first_error(capsys):
    results = Results([result({"step": 4, "val_loss": 5.0}, RuntimeError("CUDA out of memory\nmore")),
                       result(None, ValueError("bad"))])
    assert exit_code(results) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: no trial produced a result (2 trials, first error RuntimeError: CUDA out of memory); "
                     "see /sweeps/lr_warmup_1"]


def test_a_sweep_with_one_result_exits_0_and_a_diverged_trial_is_a_result(capsys):
    assert exit_code(Results([result(None, RuntimeError("x")), result({"step": 12, "val_loss": 3.0})])) == 0
    assert exit_code(Results([result({"step": 5, "val_loss": DIVERGED_LOSS, "diverged": 1})])) == 0
    assert capsys.readouterr().err == ""


def test_a_sweep_in_which_no_trial_ran_exits_1(capsys):
    assert exit_code(Results([])) == 1
    assert "(0 trials, first error none ran)" in capsys.readouterr().err
