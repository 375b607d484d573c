"""pytest tests/sweeps/test_gpu_sweeps.py — sweeps on a GPU survive what goes wrong: two trials sharing one GPU (Ray
fractional GPUs), one of them SIGKILLed, restart from their checkpoints; a SIGTERMed sweep resumes with --resume.
The GPU versions of tests/sweeps/test_reliability.py's end-to-end cases, with its helpers (sweep_processes.py).
Needs a CUDA GPU (skipped without one).

    pytest tests/sweeps/test_gpu_sweeps.py
"""
from __future__ import annotations

import re
import shlex
import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from sweeps.engine.launch import run_sweep
from sweeps.engine.plan import Dim
from tests.support import runs_of, steps_of, sweep_args
from tests.sweeps.sweep_processes import (checkpoints, interrupt_during_the_second_trial, kill_a_trial_worker,
                                          start_sweep)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
# train.device=cuda, not auto: a trial that Ray gave no GPU fails instead of quietly training on the CPU.
ON_THE_GPU = ("--gpus-per-trial", "0.5", "--set", "train.device=cuda")


def _latest_checkpoint_per_trial(storage: Path, experiment: str) -> dict[Path, int]:
    latest: dict[Path, int] = defaultdict(lambda: -1)
    for path in checkpoints(storage, experiment):
        found = re.fullmatch(r"checkpoint_(\d+)", path.name)
        if found:
            latest[path.parent] = max(latest[path.parent], int(found[1]))
    return latest


def _cuda_rng_saved(storage: Path, experiment: str) -> bool:
    """Whether a trial's checkpoint carries CUDA RNG states: the trial process saw a GPU."""
    from sweeps.engine.trainable import load_state

    return any(load_state(path)["rng"]["cuda"] for path in checkpoints(storage, experiment)[:1])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the trial's worker process through /proc")
def test_two_trials_on_one_gpu_one_killed_both_finish_from_their_checkpoints(inputs):
    def space(cfg):
        return {"optim.lr": Dim(None, grid=(3e-3, 1e-3)), "optim.warmup_steps": Dim(None, grid=(10,))}

    storage, killed, seen = inputs / "ray_results", [], []

    def both_have_checkpointed() -> bool:  # checkpoint_000002: Tune holds one to restart from (see test_reliability)
        latest = _latest_checkpoint_per_trial(storage, "gpucrash")
        return len(latest) == 2 and min(latest.values()) >= 2

    def kill_one_worker_once_both_have_checkpointed() -> None:
        deadline = time.monotonic() + 300
        while not both_have_checkpointed():
            assert time.monotonic() < deadline, "the two trials did not both checkpoint"
            time.sleep(0.01)
        kill_a_trial_worker(2, seen, killed)

    killer = threading.Thread(target=kill_one_worker_once_both_have_checkpointed, daemon=True)
    killer.start()
    # 4000 steps: a smoke trial on a GPU runs a few hundred steps a second; the kill must land mid-trial.
    args = sweep_args(inputs, "gpucrash", "--search", "grid", "--finetune-train", "none", "--max-concurrent", "2",
                      *ON_THE_GPU, "--set", "train.max_steps=4000", "--set", "train.eval_every=100")
    assert run_sweep("gpucrash", space, args) == 0
    killer.join(5)
    assert len(killed) == 1, f"not two trial workers among the processes {seen}"
    assert _cuda_rng_saved(storage, "gpucrash")
    client, parents, children = runs_of(inputs, "gpucrash")
    assert len(parents) == 1 and len(children) == 2
    assert all(c.info.status == "FINISHED" and c.data.tags["gptsweep.outcome"] == "completed" for c in children)
    restarted = [c for c in children if c.data.tags.get("gptsweep.restarts") == "1"]
    assert len(restarted) == 1 and int(restarted[0].data.tags["gptsweep.resumed_from_step"]) >= 100
    for child in children:
        for key in ("val_loss", "train_loss"):
            assert steps_of(client, child.info.run_id, key) == list(range(100, 4001, 100))  # no gap, no repeat


def test_a_sigtermed_gpu_sweep_resumes_on_the_gpu(tiny_corpus, tmp_path):
    sweep = start_sweep(tmp_path, tiny_corpus, *ON_THE_GPU, "--set", "train.max_steps=3000")
    interrupt_during_the_second_trial(tmp_path, sweep, signal.SIGTERM)
    err = (tmp_path / "err.txt").read_text()
    assert sweep.returncode == 128 + signal.SIGTERM, err
    command = err.split("continue from their last checkpoints with:\n", 1)[1].splitlines()[0].strip()
    assert command.endswith(" --resume") and "train.device=cuda" in shlex.split(command)

    resumed = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _cuda_rng_saved(tmp_path / "ray_results", "lr_warmup")
    client, parents, children = runs_of(tmp_path, "lr_warmup")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 2
    assert all((c.info.status, c.data.tags["gptsweep.outcome"]) == ("FINISHED", "completed") for c in children)
    assert int(children[1].data.tags["gptsweep.resumed_from_step"]) >= 50  # continued from its checkpoint
    for child in children:
        assert steps_of(client, child.info.run_id) == list(range(50, 3001, 50))
