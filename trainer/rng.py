"""The global random states (torch CPU, CUDA, numpy, Python) as tensors and plain data, and back.

    pytest tests/trainer/test_loop.py -k resumed

A checkpoint holds only what `torch.load(..., weights_only=True)` accepts: numpy's legacy state tuple carries an
ndarray (an unpickled numpy object) and Python's is a tuple of 625 ints, so both become tensors or lists here.
Every state is restored on the device its setter takes: torch's and CUDA's setters want CPU ByteTensors, whatever
device the tensors were mapped to when the checkpoint was loaded.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """The process's RNG states: CPU ByteTensors, a tensor of numpy's MT19937 keys, and ints/floats/lists."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # Only where this process has used CUDA: asking would otherwise start a CUDA context (GPU memory) in a CPU run.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": [int(version), [int(x) for x in internal], gauss_next],
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state()` returned (possibly after a round trip through torch.save / torch.load)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"])))
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))
    if state["cuda"] and torch.cuda.is_available():
        # One state per GPU that was visible when it was saved; a restart may see fewer (Ray hands a trial its own).
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
