"""Send MLflow what a sweep could not while its tracking server was down: the journal lines not yet applied.

    python -m sweeps.engine.sync --sweep ray_results/lr_warmup_20261202-064000 [--mlflow-uri http://127.0.0.1:5000]

The sweep's end prints this command when the server did not come back in time. Each journal line is applied
once and in order, so afterwards MLflow holds what it would have held without the outage; running it again
sends nothing. Exit codes: 0 all sent, 1 the server is still unreachable (run it again later), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainer.cli import ArgumentParser, exits_cleanly_on_bad_input
from trainer.config import ConfigError
from trainer.result_schema import SweepIdentity
from trainer.telemetry import disable_telemetry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m sweeps.engine.sync", description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, help="the sweep's Tune folder (as the sweep printed it)")
    parser.add_argument("--mlflow-uri", default=None, help="default: the URI the sweep logged to")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to keep trying an unreachable server")
    return parser.parse_args(argv)


@exits_cleanly_on_bad_input
def main(argv: list[str] | None = None) -> int:
    disable_telemetry()
    args = parse_args(argv)
    # MLflow after the flags and the telemetry switch: its import takes ~5 s (bad flags fail before) and it
    # reads the switch when imported.
    from sweeps.engine.tracking.journal import Journal, Outbox, journal_folder, use_client_env
    from sweeps.engine.tracking.writer import MlflowWriter

    use_client_env()
    sweep = args.sweep if "://" in args.sweep else str(Path(args.sweep).resolve())
    journal = Journal(journal_folder(sweep))
    if not journal.path.is_file():
        raise ConfigError(f"no MLflow journal in {journal.path.parent}; pass the sweep's Tune folder as printed "
                          "at its end (e.g. --sweep ray_results/lr_warmup_20261202-064000)")
    first = next(iter(_lines(journal)), None)
    uri = args.mlflow_uri or (first or {}).get("tracking_uri")
    if not uri:
        raise ConfigError("the journal does not name its MLflow server; pass --mlflow-uri")
    pending = len(journal.pending())
    outbox = Outbox(journal, MlflowWriter(SweepIdentity(uri, first["experiment"], first["sweep_path"])), uri)
    if not outbox.drain(args.wait):
        print(f"MLflow at {uri} is still unreachable: {len(outbox.queue)} of {pending} updates wait; "
              "run this again when it is back", file=sys.stderr)
        return 1
    print(f"sent {pending} updates to {uri}; nothing left in {journal.path}")
    return 0


def _lines(journal):
    with open(journal.path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


if __name__ == "__main__":
    sys.exit(main())
