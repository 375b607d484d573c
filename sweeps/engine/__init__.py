"""The sweep engine: what every sweep definition in sweeps/ runs on. Users copy a sweep file, not these modules.

    python sweeps/lr_warmup.py    (a sweep definition: a search space + run_sweep from sweeps.engine.launch)

flags → plan (validated, nothing started) → launch (Ray, Tune, the summary); trainable (one trial),
searcher (Optuna TPE that tells the truth), progress, signals, grow (--resume --num-samples), scratch_baseline,
and tracking/, the MLflow side: Tune events → journal → writer; sync replays a journal.
"""
