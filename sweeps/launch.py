"""Run a validated SweepPlan on Ray Tune: tokenize once, start or join Ray, fit, summarize.

    python sweeps/lr_warmup.py --preset smoke --num-samples 2      (any sweep script ends here)

Ctrl+C (SIGINT) or SIGTERM stops the sweep the same way: Tune stops the trials, saves the experiment state and
MLflow marks the sweep KILLED; the runner prints the command that resumes it and exits 128 + the signal number.
A second signal stops at once, skipping the final save (the resume then starts from Tune's last periodic save).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sweeps.runner import REDUCTION_FACTOR, SweepPlan
from trainer.config import ConfigError
from trainer.data import prepare_corpus, prepare_finetune

REPORTED = {"step": "step", "val_ppl": "val_ppl", "val_acc": "val_acc", "tokens_per_s": "tok/s",
            "finetune_acc": "ft_acc", "finetune_acc_fewshot": "ft_acc_100"}


def _search_algorithm(plan: SweepPlan):
    from ray import tune

    if plan.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=plan.seed))
    # An explicit generator ignores TuneConfig.max_concurrent_trials (Tune only warns): give it the limit itself.
    return tune.search.BasicVariantGenerator(random_state=plan.seed, max_concurrent=plan.max_concurrent)


def _scheduler(plan: SweepPlan):
    if plan.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # time_attr=step: rungs are in training steps, so the grace period means the same for any eval_every.
    return ASHAScheduler(time_attr="step", max_t=plan.cfg.train.max_steps, grace_period=plan.grace_steps,
                         reduction_factor=REDUCTION_FACTOR)


def _param_space(plan: SweepPlan) -> dict:
    from ray import tune

    searched = {k: tune.grid_search(list(d.grid)) if plan.search == "grid" else d.domain
                for k, d in plan.dims.items()}
    return {**plan.fixed, **searched}


def _start_ray(plan: SweepPlan) -> None:
    import ray

    if not ray.is_initialized():  # a notebook or test that already started Ray keeps its instance
        ray.init(address=plan.address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if plan.gpus_per_trial > cluster_gpus:
        ray.shutdown()
        raise ConfigError(f"--gpus-per-trial {plan.gpus_per_trial:g} but the Ray cluster has {cluster_gpus:g} GPUs; "
                          "lower it or add GPU nodes")


class StopOnSignal:
    """SIGINT and SIGTERM both become Tune's own graceful stop (which it offers on SIGINT and SIGUSR1) while
    `fit` runs; before Tune has installed its handler, and on a second signal, they raise KeyboardInterrupt."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._saved: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread; Tune then leaves them alone too
        self._env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours forwards to Tune's (registered on SIGUSR1)
        self._saved = {s: signal.getsignal(s) for s in (*self.SIGNALS, signal.SIGUSR1)}
        self.arm()
        return self

    def arm(self) -> None:
        """(Re)install the handlers: connecting to Ray installs its C++ SIGTERM handler, which aborts the driver."""
        if self._saved:
            for s in self.SIGNALS:
                signal.signal(s, self._handle)

    def _handle(self, signum: int, frame) -> None:
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if self.signum is not None or not callable(tune_handler) or tune_handler is self._saved[signal.SIGUSR1]:
            self.signum = self.signum or signum
            raise KeyboardInterrupt  # a second signal, or Tune not running yet: stop now
        self.signum = signum
        # os.write, not print: a handler that prints while the main thread prints raises "reentrant call".
        os.write(2, f"\n{signal.Signals(signum).name}: stopping the trials and saving the sweep's state "
                    "(send it again to stop at once)\n".encode())
        tune_handler(signum, frame)

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)
        if self._saved:
            if self._env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._env


def launch(plan: SweepPlan) -> int:
    with StopOnSignal() as stop:
        try:
            return _launch(plan, stop)
        except KeyboardInterrupt:
            # Before any trial (nothing to resume) or a second signal (Tune skipped its final save).
            print(f"\nsweep stopped by {signal.Signals(stop.signum or signal.SIGINT).name}", file=sys.stderr)
            return 128 + (stop.signum or signal.SIGINT)


def _set_up_tracking(plan: SweepPlan) -> None:
    """Import torch, Ray Tune and MLflow and create the sweep's experiment (a fresh database: ~2 s of schema
    migrations). Only after the data is ready: bad input fails fast, without seconds of importing them."""
    import trainer.trainable  # noqa: F401  (torch and Ray Tune)
    from trainer.tracking import ensure_experiment

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not "creating database tables" on every first run
    ensure_experiment(plan.tracking_uri, plan.experiment)


def _launch(plan: SweepPlan, stop: StopOnSignal) -> int:
    started = time.perf_counter()
    corpus, tokenizer = prepare_corpus(plan.cfg.data, plan.cfg.model.context_length)
    print(corpus.summary, flush=True)
    finetune_data = prepare_finetune(plan.cfg.data, tokenizer, plan.cfg.finetune.max_length)
    prepared = time.perf_counter() - started
    from ray import tune  # (Ray's own modules are imported here, not in two threads at once)

    # Starting Ray takes ~2.5 s, of which 0.3 s on this CPU: the rest is waiting for its processes. Set up
    # tracking meanwhile (a sweep of 8 short trials spent 8 % of its slot time before its first trial started).
    with ThreadPoolExecutor(max_workers=1) as background:
        tracking_ready = background.submit(_set_up_tracking, plan)
        _start_ray(plan)
        stop.arm()
        tracking_ready.result()

    from trainer.floors import loss_floors
    from trainer.trainable import train_gpt
    from trainer.tracking import MLflowTracking, mark_sweep

    trainable = tune.with_resources(
        tune.with_parameters(train_gpt, corpus=corpus, tokenizer=tokenizer, finetune_data=finetune_data),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})
    if plan.resume_path is not None:
        print(f"resuming {plan.resume_path}", flush=True)
        sweep_path = str(plan.resume_path)
        tuner = tune.Tuner.restore(sweep_path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        run_name = f"{plan.experiment}_{time.strftime('%Y%m%d-%H%M%S')}"
        sweep_path = f"{plan.storage}/{run_name}"
        tracking = MLflowTracking(plan.tracking_uri, plan.experiment, sweep_path=sweep_path,
                                  sweep_params=_sweep_params(plan), searched=list(plan.dims),
                                  corpus_metrics=loss_floors(corpus.train, corpus.val, corpus.vocab_size))
        reporter = tune.CLIReporter(metric_columns=REPORTED, parameter_columns=list(plan.dims),
                                    max_report_frequency=60, sort_by_metric=True)
        tuner = tune.Tuner(
            trainable, param_space=_param_space(plan),
            tune_config=tune.TuneConfig(metric="val_loss", mode="min", search_alg=_search_algorithm(plan),
                                        scheduler=_scheduler(plan), num_samples=plan.num_samples,
                                        max_concurrent_trials=plan.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(name=run_name, storage_path=plan.storage, callbacks=[tracking],
                                      failure_config=tune.FailureConfig(max_failures=plan.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      progress_reporter=reporter, verbose=1))
    try:
        results = tuner.fit()
    except KeyboardInterrupt:  # a second signal: Tune's callbacks did not close the parent run
        mark_sweep(plan.tracking_uri, plan.experiment, sweep_path, "KILLED")
        _print_resume(plan, stop.signum or signal.SIGINT, time.perf_counter() - started)
        return 128 + (stop.signum or signal.SIGINT)
    if stop.signum is not None:
        _print_resume(plan, stop.signum, time.perf_counter() - started)
        return 128 + stop.signum
    _print_summary(plan, results, time.perf_counter() - started, prepared, sweep_path)
    return 0


def _print_resume(plan: SweepPlan, signum: int, wall_s: float) -> None:
    print(f"\nsweep interrupted by {signal.Signals(signum).name} after {wall_s:.0f}s; finished trials are kept "
          f"and unfinished ones continue from their last checkpoints with:\n  {plan.resume_command}",
          file=sys.stderr, flush=True)


def _sweep_params(plan: SweepPlan) -> dict[str, object]:
    return {**{k: v for k, v in plan.fixed.items() if v is not None}, "sweep.search": plan.search,
            "sweep.scheduler": plan.scheduler, "sweep.num_samples": plan.num_samples,
            "sweep.max_concurrent": plan.max_concurrent, "sweep.cpus_per_trial": plan.cpus_per_trial,
            "sweep.gpus_per_trial": plan.gpus_per_trial, "sweep.grace_steps": plan.grace_steps}


def _print_summary(plan: SweepPlan, results, wall_s: float, prepared_s: float, sweep_path: str) -> None:
    finished = [r for r in results if r.metrics and "val_ppl" in r.metrics and not r.metrics.get("diverged")]
    print(f"\nsweep finished in {wall_s:.0f}s ({prepared_s:.1f}s preparing data): {len(results)} trials, "
          f"{len(results.errors)} errors")
    if finished:
        best = min(finished, key=lambda r: r.metrics["val_ppl"])
        chosen = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in ((k, best.config[k]) for k in plan.dims))
        extra = "".join(f", {k}={best.metrics[k]:.3f}" for k in ("finetune_acc", "finetune_acc_fewshot")
                        if k in best.metrics)
        print(f"best trial: {chosen}: val_ppl={best.metrics['val_ppl']:.1f}{extra}")
    from sweeps.mlflow_view import sweep_urls

    urls = sweep_urls(plan.tracking_uri, plan.experiment, sweep_path)
    print(f"MLflow: {plan.tracking_uri}  (browse: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui "
          f"--backend-store-uri {plan.tracking_uri} --host 127.0.0.1 --workers 1)")
    if urls:
        print(f"  the sweeps (+ on a row shows its trials): {urls[0]}\n  this sweep's page: {urls[1]}")
    print(f"Tune results: {results.experiment_path}")
