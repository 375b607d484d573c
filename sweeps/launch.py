"""Run a validated SweepPlan on Ray Tune: tokenize once, start or join Ray, fit, summarize.

    python sweeps/lr_warmup.py --preset smoke --num-samples 2      (any sweep script ends here)
"""
from __future__ import annotations

import logging
import time

from sweeps.runner import SweepPlan
from trainer.config import ConfigError
from trainer.data import prepare_corpus, prepare_finetune
from trainer.floors import loss_floors
from trainer.trainable import train_gpt
from trainer.tracking import MLflowTracking, ensure_experiment

REPORTED = {"step": "step", "val_ppl": "val_ppl", "val_acc": "val_acc", "tokens_per_s": "tok/s",
            "finetune_acc": "ft_acc", "finetune_acc_fewshot": "ft_acc_100"}


def _search_algorithm(plan: SweepPlan):
    from ray import tune

    if plan.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=plan.seed))
    return tune.search.BasicVariantGenerator(random_state=plan.seed)


def _scheduler(plan: SweepPlan):
    if plan.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # time_attr=step: rungs are in training steps, so the grace period means the same for any eval_every.
    return ASHAScheduler(time_attr="step", max_t=plan.cfg.train.max_steps, grace_period=plan.grace_steps,
                         reduction_factor=2)


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


def launch(plan: SweepPlan) -> int:
    from ray import tune

    started = time.perf_counter()
    corpus, tokenizer = prepare_corpus(plan.cfg.data, plan.cfg.model.context_length)
    print(corpus.summary, flush=True)
    finetune_data = prepare_finetune(plan.cfg.data, tokenizer, plan.cfg.finetune.max_length)
    prepared = time.perf_counter() - started
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not "creating database tables" on every first run
    _start_ray(plan)
    ensure_experiment(plan.tracking_uri, plan.experiment)

    trainable = tune.with_resources(
        tune.with_parameters(train_gpt, corpus=corpus, tokenizer=tokenizer, finetune_data=finetune_data),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})
    if plan.resume_path is not None:
        print(f"resuming {plan.resume_path}", flush=True)
        tuner = tune.Tuner.restore(str(plan.resume_path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        run_name = f"{plan.experiment}_{time.strftime('%Y%m%d-%H%M%S')}"
        tracking = MLflowTracking(plan.tracking_uri, plan.experiment, sweep_path=f"{plan.storage}/{run_name}",
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
    results = tuner.fit()
    _print_summary(plan, results, time.perf_counter() - started, prepared)
    return 0


def _sweep_params(plan: SweepPlan) -> dict[str, object]:
    return {**{k: v for k, v in plan.fixed.items() if v is not None}, "sweep.search": plan.search,
            "sweep.scheduler": plan.scheduler, "sweep.num_samples": plan.num_samples,
            "sweep.max_concurrent": plan.max_concurrent, "sweep.cpus_per_trial": plan.cpus_per_trial,
            "sweep.gpus_per_trial": plan.gpus_per_trial, "sweep.grace_steps": plan.grace_steps}


def _print_summary(plan: SweepPlan, results, wall_s: float, prepared_s: float) -> None:
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
    print(f"MLflow: {plan.tracking_uri}  (browse: mlflow ui --backend-store-uri {plan.tracking_uri} "
          f"--host 127.0.0.1 --workers 1)\nTune results: {results.experiment_path}")
