"""Does pretraining help? Once per sweep, the best trial's fine-tuning recipe on random weights of its shape.

    python sweeps/lr_warmup.py        (runs this in the driver after the last trial)

The result goes to the sweep's parent run as `finetune_acc_scratch` and `finetune_acc_fewshot_scratch`, beside
`best_finetune_acc`; the report shows them next to every trial's accuracies. A resumed sweep whose parent run
has them already does not compute them again.
"""
from __future__ import annotations

import time

from sweeps.engine.tracking.journal import Journal, Outbox, is_unreachable, journal_folder
from sweeps.engine.tracking.tune_events import end_wait_s
from sweeps.engine.tracking.writer import MlflowWriter
from trainer.config import config_from_params
from trainer.data import FinetuneData
from trainer.finetune import scratch_metrics
from trainer.result_schema import SweepIdentity


def log_scratch_baseline(sweep: SweepIdentity, best, vocab_size: int,
                         finetune_data: FinetuneData | None) -> dict[str, float] | None:
    """Compute the scratch baseline for the sweep's best trial (its Tune result, sweeps.engine.console_text.best_result)
    when it was fine-tuned, and log it to the parent run (step 0), through the sweep's journal like every other
    write (sweeps.engine.tracking.journal): a tracking outage loses it no more than them."""
    if best is None or finetune_data is None or "finetune_acc" not in best.metrics:
        return None
    writer = MlflowWriter(sweep)
    try:
        parent = writer._parent()
        if parent is not None and "finetune_acc_scratch" in writer.client.get_run(parent).data.metrics:
            return None  # a resumed sweep: measured already
    except Exception as error:  # the server is down: measure it anyway, the journal keeps it
        if not is_unreachable(error):
            raise
    print("fine-tuning a never-pretrained model of the best trial's shape (does pretraining help?)", flush=True)
    started = time.perf_counter()
    metrics = scratch_metrics(config_from_params(best.config), vocab_size, finetune_data)
    outbox = Outbox(Journal(journal_folder(sweep.sweep_path)), writer, sweep.tracking_uri)
    outbox.send({"op": "parent_metrics", "metrics": {k: float(v) for k, v in metrics.items()}})
    outbox.drain(end_wait_s())
    print(f"from scratch ({time.perf_counter() - started:.0f}s): " + ", ".join(
        f"{k}={v:.3f} (pretrained: {best.metrics.get(k.removesuffix('_scratch'), float('nan')):.3f})"
        for k, v in metrics.items()), flush=True)
    return metrics
