"""pytest tests/sweeps/test_checkpoints.py — checkpoints a restart can trust: written atomically, holding only tensors
and plain data, loaded to the CPU with weights_only=True (as a CUDA run loads them too) and continuing bit for
bit; a truncated file fails naming it, and one that would run code is refused in one line.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import torch

from tests.support import checkpoint_at_step_8_then_die


# --- integrity -------------------------------------------------------------------------------
def test_a_truncated_checkpoint_fails_naming_its_path(smoke_trainer, tmp_path):
    from ray import tune

    from sweeps.engine.trainable import load_checkpoint, save_checkpoint

    trainer, folder = smoke_trainer(), tmp_path / "checkpoint"
    folder.mkdir()
    trainer.run()
    save_checkpoint(trainer, folder)
    path = folder / "state.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RuntimeError, match=re.escape(f"corrupt checkpoint {path}")):
        load_checkpoint(smoke_trainer(), tune.Checkpoint.from_directory(str(folder)))


def test_checkpoints_are_written_atomically_and_a_partial_file_is_never_loaded(smoke_trainer, tmp_path,
                                                                               monkeypatch):
    from ray import tune

    from sweeps.engine.trainable import load_checkpoint, save_checkpoint

    trainer, folder = smoke_trainer(), tmp_path / "checkpoint"
    folder.mkdir()
    trainer.run()
    save_checkpoint(trainer, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["state.pt"]
    good = (folder / "state.pt").read_bytes()

    def crash_mid_write(state, f):  # a crash (or kill) while the next checkpoint is being written
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(torch, "save", crash_mid_write)
        save_checkpoint(trainer, folder)
    assert (folder / "state.pt").read_bytes() == good and (folder / "state.pt.partial").exists()
    restored = smoke_trainer()
    load_checkpoint(restored, tune.Checkpoint.from_directory(str(folder)))  # the good one, not the partial
    assert restored.step == trainer.step == 12

    (folder / "state.pt").unlink()  # only the partial left: an error naming the checkpoint, not a load
    with pytest.raises(RuntimeError, match=r"state\.pt is missing \(only an unfinished state\.pt\.partial"):
        load_checkpoint(smoke_trainer(), tune.Checkpoint.from_directory(str(folder)))


def _leaves(value):
    """Every non-container value in a nest of dicts, lists and tuples."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]



def test_a_checkpoint_loaded_as_a_cuda_run_loads_it_restores_and_continues_bit_for_bit(smoke_trainer, tmp_path):
    """A restart loads state.pt to the CPU with weights_only=True, whatever the run's device (a CUDA run too: its
    RNG setters take CPU ByteTensors), and Pretrainer.load_state_dict moves it; the run then continues exactly."""
    import random

    import numpy as np
    from ray import tune

    from sweeps.engine.trainable import load_checkpoint, load_state

    settings = {"train.precision": "fp32", "model.dropout": 0.1}  # dropout: the RNG states must resume too
    straight = smoke_trainer(**settings)
    straight.run()
    folder = checkpoint_at_step_8_then_die(smoke_trainer, settings, tmp_path / "checkpoint")
    draws = (torch.rand(3), np.random.random(3), random.random())  # what the saved RNG states produce next

    state = load_state(folder)
    assert all(isinstance(leaf, (torch.Tensor, int, float, str, bool, type(None))) for leaf in _leaves(state))
    assert all(leaf.device.type == "cpu" for leaf in _leaves(state) if isinstance(leaf, torch.Tensor))
    rng = state["rng"]
    for byte_state in [rng["torch"], *rng["cuda"]]:
        assert byte_state.dtype == torch.uint8 and byte_state.device.type == "cpu"
    resumed = smoke_trainer(**settings)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # anything else: the checkpoint must win
    load_checkpoint(resumed, tune.Checkpoint.from_directory(str(folder)))
    assert resumed.step == 8
    assert torch.equal(torch.rand(3), draws[0]) and np.array_equal(np.random.random(3), draws[1])
    assert random.random() == draws[2]
    load_checkpoint(resumed, tune.Checkpoint.from_directory(str(folder)))  # the draws above moved the states on
    resumed.run()
    assert [h["step"] for h in resumed.history] == [4, 8, 12]
    assert resumed.history[-1]["val_loss"] == straight.history[-1]["val_loss"]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)


class _RunsCode:
    """Unpickling this runs a shell command that writes a marker file: what a planted state.pt would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line_naming_it(smoke_trainer, tmp_path):
    from sweeps.engine.trainable import load_state

    folder, marker = tmp_path / "checkpoint", tmp_path / "code-ran"
    folder.mkdir()
    trainer = smoke_trainer()
    torch.save({**trainer.state_dict(), "model": _RunsCode(marker)}, folder / "state.pt")
    with pytest.raises(RuntimeError) as refused:
        load_state(folder)
    message = str(refused.value)
    assert message.startswith(f"refused checkpoint {folder / 'state.pt'}: ") and "\n" not in message
    assert "system" in message  # the global it refused, by name
    assert not marker.exists()
    torch.load(folder / "state.pt", weights_only=False)  # the file is live: trusted unpickling runs it
    assert marker.exists()
