"""Does pretraining help? Once per sweep, the best trial's fine-tuning recipe on random weights of its shape.

    python sweeps/lr_warmup.py        (runs this in the driver after the last trial)

The result goes to the sweep's parent run as `finetune_acc_scratch` and `finetune_acc_fewshot_scratch`, beside
`best_finetune_acc`; the report shows them next to every trial's accuracies. A resumed sweep whose parent run
has them already does not compute them again.
"""
from __future__ import annotations

import time

from trainer.config import config_from_params
from trainer.data import FinetuneData
from trainer.finetune import scratch_metrics


def best_finetuned(results):
    """The Tune result with the lowest val_ppl among the non-diverged trials that were fine-tuned, or None."""
    finetuned = [r for r in results if r.metrics and "finetune_acc" in r.metrics and "val_ppl" in r.metrics
                 and not r.metrics.get("diverged")]
    return min(finetuned, key=lambda r: r.metrics["val_ppl"], default=None)


def log_scratch_baseline(tracking_uri: str, experiment: str, sweep_path: str, results, vocab_size: int,
                         finetune_data: FinetuneData | None) -> dict[str, float] | None:
    """Compute the scratch baseline for the best fine-tuned trial and log it to the parent run (step 0)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from trainer.tracking import find_sweep_run

    best = best_finetuned(results) if finetune_data is not None else None
    client = MlflowClient(tracking_uri)
    experiment_entity = client.get_experiment_by_name(experiment)
    run_id = experiment_entity and find_sweep_run(client, experiment_entity.experiment_id, sweep_path)
    if best is None or not run_id or "finetune_acc_scratch" in client.get_run(run_id).data.metrics:
        return None
    print("fine-tuning a never-pretrained model of the best trial's shape (does pretraining help?)", flush=True)
    started = time.perf_counter()
    metrics = scratch_metrics(config_from_params(best.config), vocab_size, finetune_data)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    print(f"from scratch ({time.perf_counter() - started:.0f}s): " + ", ".join(
        f"{k}={v:.3f} (pretrained: {best.metrics.get(k.removesuffix('_scratch'), float('nan')):.3f})"
        for k, v in metrics.items()), flush=True)
    return metrics
