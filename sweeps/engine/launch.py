"""Run a sweep: plan it (exit 2 on bad input), then on Ray Tune: tokenize once, start or join Ray, fit, summarize.

    python sweeps/lr_warmup.py --preset smoke --num-samples 2      (every sweep script calls run_sweep)

Ctrl+C (SIGINT) or SIGTERM stops the sweep the same way: Tune stops the trials, saves the experiment state and
MLflow marks the sweep KILLED; run_sweep prints the command that resumes it and exits 128 + the signal number.
A second signal stops at once, skipping the final save (the resume then starts from Tune's last periodic save).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from sweeps.engine.console_text import best_result, exit_code, print_summary
from sweeps.engine.grow import mark_part, origin_of, plan_growth
from sweeps.engine.plan import REDUCTION_FACTOR, SearchSpace, SweepPlan, make_plan
from sweeps.engine.progress import TimeLeftReporter
from sweeps.engine.ray_session import ray_processes_in_own_session
from sweeps.engine.searcher import optuna_search, study_storage
from sweeps.engine.signals import StopOnSignal
from sweeps.engine.sweep_lock import schema_lock, sweep_lock
from trainer.cli import exits_cleanly_on_bad_input
from trainer.config import ConfigError, with_vocab_size
from trainer.data import prepare_corpus, prepare_finetune
from trainer.floors import loss_floors
from trainer.result_schema import SweepIdentity
from trainer.telemetry import disable_telemetry

# Torch (the trainable, the scratch baseline) and MLflow (the tracking room) are imported inside the functions
# that need them: ~5 s each on a 2-core CPU, which a sweep with bad input would wait for before its one-line error.

# Ray prints advice a sweep user cannot act on; these keep the console to the progress table.
RAY_CONSOLE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # the classic table lets us choose its columns
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no tensorboardX warning; MLflow is the log
    "RAY_TRAIN_V2_ENABLED": "0",
    # Progress reports between evals carry no val_loss (so that nothing ranks trials on them): Tune must accept them.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
}

REPORTED = {"step": "step", "train_loss": "loss", "val_ppl": "val_ppl", "val_bpb": "val_bpb",
            "tokens_per_s": "tok/s", "finetune_acc": "ft_acc", "finetune_acc_fewshot": "ft_acc_100"}


def _search_algorithm(plan: SweepPlan, study_name: str, sweep_path: str, seed: int, num_samples: int):
    if plan.search == "optuna":
        with schema_lock(plan.tracking_uri):  # optuna.db beside mlflow.db: one process creates its tables
            return optuna_search(seed, num_samples, study_storage(plan.tracking_uri, sweep_path), study_name)
    # An explicit generator ignores TuneConfig.max_concurrent_trials (Tune only warns): give it the limit itself.
    return tune.search.BasicVariantGenerator(random_state=seed, max_concurrent=plan.max_concurrent)


def _scheduler(plan: SweepPlan):
    if plan.scheduler == "fifo":
        return None
    # Rungs are in training steps (or tokens, plan.time_attr), so the grace period means the same for any
    # eval_every.
    max_t, grace = plan.asha_budget()
    return ASHAScheduler(time_attr=plan.time_attr, max_t=max_t, grace_period=grace, reduction_factor=REDUCTION_FACTOR)


def _param_space(plan: SweepPlan) -> dict:
    searched = {k: tune.grid_search(list(d.grid)) if plan.search == "grid" else d.domain
                for k, d in plan.dims.items()}
    if plan.search == "grid" and plan.num_samples > 1:  # repeats of the grid are repeats: each its own seed
        searched["train.seed"] = tune.grid_search([plan.seed + i for i in range(plan.num_samples)])
    return {**plan.fixed, **searched}


def _tune_samples(plan: SweepPlan) -> int:
    """Tune's num_samples: a grid's repeats are already in its train.seed axis (_param_space)."""
    return 1 if plan.search == "grid" else plan.num_samples


def _auth_refusal(error: BaseException | None) -> str | None:
    """The first line of an authentication error anywhere in the chain Ray raises on connecting, else None."""
    while error is not None:
        if type(error).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(error):
            text = str(error).split("InvalidAuthToken: ", 1)[-1]
            return text.split(". ")[0].strip()
        error = error.__cause__ or error.__context__
    return None


def _start_ray(plan: SweepPlan) -> None:
    # Ray 2.60 binds its GCS, raylet and workers to every interface (it has no loopback-only setting), so a local
    # sweep relies on Ray's default for a new local cluster, token authentication: only clients holding
    # ~/.ray/auth_token may submit work. Its "token authentication is enabled" notice on every start is not
    # something a sweep user can act on; errors from the same module still show.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if not ray.is_initialized():  # a notebook or test that already started Ray keeps its instance
        disable_telemetry()  # the raylet started here passes its environment on to every trial worker
        try:
            # "local": a new cluster of this sweep's own; None would join any local one found in /tmp/ray.
            with ray_processes_in_own_session():  # a group SIGTERM then reaches only this driver
                ray.init(address=plan.address or "local", include_dashboard=False, logging_level=logging.ERROR,
                         log_to_driver=False)
        except Exception as error:
            refusal = _auth_refusal(error)
            if plan.address is None or refusal is None:
                raise
            raise ConfigError(f"the Ray cluster at {plan.address} refused this sweep ({refusal}); pass the "
                              "cluster's token: RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file>") from None
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if plan.gpus_per_trial > cluster_gpus:
        ray.shutdown()
        raise ConfigError(f"--gpus-per-trial {plan.gpus_per_trial:g} but the Ray cluster has {cluster_gpus:g} GPUs; "
                          "lower it or add GPU nodes")


@exits_cleanly_on_bad_input
def run_sweep(name: str, space: SearchSpace, argv: list[str] | None = None, default_search: str = "optuna") -> int:
    """Entry point of every sweep script: plan (exit 2 on bad input), then launch Ray Tune.

    Exit codes: 0 done (diverged trials are results), 1 no trial produced a result, 2 bad input,
    130 / 143 interrupted by SIGINT (Ctrl+C) / SIGTERM: the state is saved and the resume command printed."""
    return launch(make_plan(name, space, argv, default_search))


def launch(plan: SweepPlan) -> int:
    disable_telemetry()  # before MLflow is imported and Ray starts; Ray's workers inherit it
    for key, value in RAY_CONSOLE_ENV.items():
        os.environ.setdefault(key, value)
    with StopOnSignal() as stop, contextlib.ExitStack() as held:
        try:
            return _launch(plan, stop, held)
        except KeyboardInterrupt:
            # Before any trial (nothing to resume) or a second signal (Tune skipped its final save).
            print(f"\nsweep stopped by {signal.Signals(stop.signum or signal.SIGINT).name}", file=sys.stderr)
            return 128 + (stop.signum or signal.SIGINT)


def _set_up_tracking(plan: SweepPlan) -> None:
    """Import torch, Ray Tune and MLflow and create the sweep's experiment (a fresh database: ~2 s of schema
    migrations). Only after the data is ready: bad input fails fast, without seconds of importing them."""
    import sweeps.engine.trainable  # noqa: F401  (torch)
    from mlflow.tracking import MlflowClient

    from sweeps.engine.tracking.journal import is_unreachable, use_client_env
    from sweeps.engine.tracking.writer import ensure_experiment

    use_client_env()  # fail fast on a server that is down: the journal retries instead
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not "creating database tables" on every first run
    try:
        with schema_lock(plan.tracking_uri):  # two sweeps starting on one fresh database: one migrates it
            ensure_experiment(MlflowClient(plan.tracking_uri), plan.experiment)
    except Exception as error:  # a server that is down at the start: the journal holds the writes meanwhile
        if not is_unreachable(error):
            raise


def _launch(plan: SweepPlan, stop: StopOnSignal, held: contextlib.ExitStack) -> int:
    started = time.perf_counter()
    corpus, tokenizer = prepare_corpus(plan.cfg.data, plan.cfg.model.context_length)
    print(corpus.summary, flush=True)
    plan = dataclasses.replace(plan, cfg=with_vocab_size(plan.cfg, corpus.vocab_size))
    finetune_data = prepare_finetune(plan.cfg.data, tokenizer, plan.cfg.finetune.max_length)
    prepared = time.perf_counter() - started
    held.enter_context(sweep_lock(plan.storage, plan.experiment))  # after the data: bad data leaves no folder
    # Starting Ray takes ~2.5 s, of which 0.3 s on this CPU: the rest is waiting for its processes. Set up
    # tracking meanwhile (a sweep of 8 short trials spent 8 % of its slot time before its first trial started).
    with ThreadPoolExecutor(max_workers=1) as background:
        tracking_ready = background.submit(_set_up_tracking, plan)
        _start_ray(plan)
        stop.arm()
        tracking_ready.result()

    from sweeps.engine.scratch_baseline import log_scratch_baseline
    from sweeps.engine.trainable import train_gpt
    from sweeps.engine.tracking.tune_events import mark_sweep

    trainable = tune.with_resources(
        tune.with_parameters(train_gpt, corpus=corpus, tokenizer=tokenizer, finetune_data=finetune_data),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})
    floors = loss_floors(corpus.train, corpus.val, corpus.vocab_size, tokenizer.token_bytes())
    tuner, sweep_path = _tuner(plan, trainable, floors)
    sweep = SweepIdentity(plan.tracking_uri, plan.experiment, sweep_path)
    try:
        results = tuner.fit()
    except KeyboardInterrupt:  # a second signal: Tune's callbacks did not close the parent run
        mark_sweep(sweep, "KILLED")
        _print_resume(plan, stop.signum or signal.SIGINT, time.perf_counter() - started)
        return 128 + (stop.signum or signal.SIGINT)
    if stop.signum is not None:
        _print_resume(plan, stop.signum, time.perf_counter() - started)
        return 128 + stop.signum
    log_scratch_baseline(sweep, best_result(results), corpus.vocab_size, finetune_data)
    print_summary(plan, results, time.perf_counter() - started, prepared, sweep)
    return exit_code(results)




def _tuner(plan: SweepPlan, trainable, floors: dict):
    """(Tuner, the sweep's identity path): a new sweep, the latest one restored, or a finished one grown."""
    if plan.resume_path is None:
        name = f"{plan.experiment}_{time.strftime('%Y%m%d-%H%M%S')}"
        path = f"{plan.storage}/{name}"
        return _new_tuner(plan, trainable, floors, name, path, plan.seed, _tune_samples(plan)), path
    growth = plan_growth(plan.resume_path, plan.grow_to, plan.search) if plan.grow_to else None
    if growth is None:
        print(f"resuming {plan.resume_path}", flush=True)
        tuner = tune.Tuner.restore(str(plan.resume_path), trainable, resume_unfinished=True, resume_errored=True)
        return tuner, str(origin_of(plan.resume_path))  # a grown sweep's later part is still the first's sweep
    print(f"growing {growth.origin} from {growth.trials} to {plan.grow_to} trials in {growth.folder}", flush=True)
    mark_part(growth)
    # A new seed for the new part: the same one would propose the first part's random points again.
    tuner = _new_tuner(plan, trainable, floors, growth.folder.name, str(growth.origin), plan.seed + growth.trials,
                       plan.grow_to - growth.trials)
    return tuner, str(growth.origin)


def _new_tuner(plan: SweepPlan, trainable, floors: dict, name: str, identity: str, seed: int, num_samples: int):
    """A Tune experiment `name` in plan.storage, tracked in MLflow (and Optuna) as the sweep at `identity`."""
    from sweeps.engine.tracking.tune_events import MLflowTracking

    tracking = MLflowTracking(SweepIdentity(plan.tracking_uri, plan.experiment, identity),
                              sweep_params=_sweep_params(plan), searched=plan.searched, corpus_metrics=floors)
    reporter = TimeLeftReporter(total_trials=_total_trials(plan), max_steps=plan.cfg.train.max_steps,
                                metric_columns=REPORTED, parameter_columns=list(plan.dims),
                                max_report_frequency=30, sort_by_metric=True)
    study = Path(identity).name
    return tune.Tuner(
        trainable, param_space=_param_space(plan),
        tune_config=tune.TuneConfig(metric="val_loss", mode="min",
                                    search_alg=_search_algorithm(plan, study, identity, seed, num_samples),
                                    scheduler=_scheduler(plan), num_samples=num_samples,
                                    max_concurrent_trials=plan.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=plan.storage, callbacks=[tracking],
                                  failure_config=tune.FailureConfig(max_failures=plan.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  progress_reporter=reporter, verbose=1))


def _total_trials(plan: SweepPlan) -> int:
    grid_cells = 1
    for dim in plan.dims.values():
        grid_cells *= len(dim.grid)
    return plan.num_samples * (grid_cells if plan.search == "grid" else 1)


def _print_resume(plan: SweepPlan, signum: int, wall_s: float) -> None:
    print(f"\nsweep interrupted by {signal.Signals(signum).name} after {wall_s:.0f}s; finished trials are kept "
          f"and unfinished ones continue from their last checkpoints with:\n  {plan.resume_command}",
          file=sys.stderr, flush=True)


def _sweep_params(plan: SweepPlan) -> dict[str, object]:
    return {**{k: v for k, v in plan.fixed.items() if v is not None}, "sweep.preset": plan.preset,
            "sweep.search": plan.search,
            "sweep.scheduler": plan.scheduler, "sweep.num_samples": plan.num_samples,
            "sweep.max_concurrent": plan.max_concurrent, "sweep.cpus_per_trial": plan.cpus_per_trial,
            "sweep.gpus_per_trial": plan.gpus_per_trial, "sweep.grace_steps": plan.grace_steps,
            "sweep.time_attr": plan.time_attr}
