"""Ray's local processes in a session of their own, so that a signal to the sweep's process group reaches only the
driver, which then stops the sweep the way Ctrl+C does.

    timeout 300 python sweeps/lr_warmup.py      (timeout, Slurm and `kill -TERM -- -PGID` signal the whole group)

A local `ray.init()` starts the GCS, the raylet (and through it every trial's worker) as children in the driver's
process group. A SIGTERM sent to that group killed them at the same moment as it reached the driver, whose graceful
stop then waited 60 s for a GCS that was gone, exited 1 and left MLflow's runs RUNNING. Ray 2.60 has no setting
for this. On Windows Ray already puts its children in their own process group when the kernel ends them with
the driver; this does the same on Linux (where they get PR_SET_PDEATHSIG: they still die with the driver).
Ctrl+C is unchanged: the terminal signals only the foreground group, and Ray's children block SIGINT anyway.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from ray._private import services, utils


class _OwnSessionPopen(services.ConsolePopen):
    """Ray's process launcher, with each process started as the leader of a new session (setsid)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("start_new_session", True)
        super().__init__(*args, **kwargs)


def separate_session_supported() -> bool:
    """Only where the kernel ends Ray's processes with the driver: Ray's fallback, a reaper process, finds them
    through the driver's process group, which they must then share."""
    return sys.platform.startswith("linux") and bool(utils.detect_fate_sharing_support())


@contextlib.contextmanager
def ray_processes_in_own_session() -> Iterator[None]:
    """While the block runs (around `ray.init` of a new local cluster), Ray starts its processes in a new session."""
    if not separate_session_supported():
        yield
        return
    original = services.ConsolePopen
    services.ConsolePopen = _OwnSessionPopen
    try:
        yield
    finally:
        services.ConsolePopen = original
