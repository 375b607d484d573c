"""The MLflow side of a sweep, in one room: Tune events → journal lines → MLflow.

    python -m sweeps.engine.sync --sweep SWEEP_FOLDER     (sends what an outage held back)

tune_events (a Tune callback that turns trial events into journal lines), journal (kept in the sweep folder,
applied in order, each line once), writer (applies a line to MLflow), run_page (names and descriptions shown on
the MLflow pages).
"""
