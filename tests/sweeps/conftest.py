"""Fixtures of the sweep tests: the inputs of real smoke sweeps (helpers: tests/support.py)."""
from __future__ import annotations

import pytest
import ray

from tests.support import write_sweep_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A corpus, an AG-News-shaped table, and an isolated cache, shared by one module's sweeps. Each test writes
    its own experiment: none changes what another reads."""
    root = write_sweep_inputs(tmp_path_factory.mktemp("sweeps"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTSWEEP_CACHE_DIR", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("GPTSWEEP_PROGRESS_EVERY_S", "0")  # a progress report at every step between evals
        yield root
    ray.shutdown()
