"""pytest tests/trainer/test_gpu.py — the CUDA path of the trainer: auto precision, checkpoints restored on the GPU, the
output layer CUDA takes. Needs a CUDA GPU (skipped without one, as on CPU CI); run it on a GPU machine together
with tests/sweeps/test_gpu_sweeps.py and the GPU benchmark.

    pytest tests/trainer/test_gpu.py
"""
from __future__ import annotations

import math

import pytest
import torch

from tests.support import checkpoint_at_step_8_then_die
from trainer.config import ModelConfig
from trainer.precision import cuda_autocast_dtype, resolve_precision
from trainer.model import GPT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = {"train.device": "cuda"}


def test_auto_precision_follows_this_gpu_and_trains(smoke_trainer):
    cuda = torch.device("cuda")
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    expected = cuda_autocast_dtype(native, torch.cuda.get_device_capability(cuda))
    assert resolve_precision("auto", cuda) is expected
    if native:  # an H100/H200/A100 trains in bf16; a T4/V100 in fp16
        assert expected is torch.bfloat16
    trainer = smoke_trainer(**CUDA, **{"train.max_steps": 40, "train.eval_every": 20, "optim.lr": 1e-2})
    assert trainer.autocast_dtype is expected and next(trainer.model.parameters()).is_cuda
    assert trainer.scaler.is_enabled() == (expected is torch.float16)  # fp16 trains with a loss scale
    untrained = trainer.evaluate()["val_loss"]
    record = trainer.run()
    assert math.isfinite(record.metrics["val_loss"]) and record.metrics["val_loss"] < untrained - 0.5


def test_a_gpu_checkpoint_loads_to_the_cpu_and_restores_on_the_gpu(smoke_trainer, tmp_path):
    from ray import tune

    from sweeps.engine.trainable import load_checkpoint, load_state

    settings = {**CUDA, "train.precision": "fp32", "model.dropout": 0.1}  # dropout draws from the CUDA RNG
    straight = smoke_trainer(**settings)
    straight.run()
    folder = checkpoint_at_step_8_then_die(smoke_trainer, settings, tmp_path / "checkpoint")
    cuda_next = torch.rand(4, device="cuda")  # what the saved CUDA RNG state draws next

    state = load_state(folder)
    assert state["rng"]["cuda"] and all(s.dtype == torch.uint8 and s.device.type == "cpu"
                                        for s in [state["rng"]["torch"], *state["rng"]["cuda"]])
    assert all(t.device.type == "cpu" for t in state["model"].values())
    resumed = smoke_trainer(**settings)
    load_checkpoint(resumed, tune.Checkpoint.from_directory(str(folder)))
    assert torch.equal(torch.rand(4, device="cuda"), cuda_next)
    assert all(p.is_cuda for p in resumed.model.parameters())
    moments = [s["exp_avg"] for s in resumed.optimizer.state.values()]
    assert moments and all(m.is_cuda for m in moments)  # the optimizer state was moved to the parameters' GPU
    load_checkpoint(resumed, tune.Checkpoint.from_directory(str(folder)))  # the draw above moved the RNG on
    resumed.run()
    assert [h["step"] for h in resumed.history] == [4, 8, 12]
    # Bit-for-bit on CPU; on a GPU atomics in some backward kernels may reorder sums: equal to rounding.
    assert resumed.history[-1]["val_loss"] == pytest.approx(straight.history[-1]["val_loss"], rel=1e-5)
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_plain_and_fused_output_layers_agree_on_the_gpu(dtype):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layers=2, n_heads=4, d_model=64, context_length=32, dropout=0.0,
                            vocab_size=5000)).cuda()
    assert not model.uses_fused_output(torch.device("cuda"))  # CUDA's default: the plain path
    ids, targets = (torch.randint(0, 5000, (4, 32), device="cuda") for _ in range(2))
    results = {}
    for fused in (False, True):
        model.fused_output = fused
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            _, loss = model(ids, targets, return_logits=False)
            loss.backward()
            with torch.no_grad():
                eval_loss, hits = model.loss_and_hits(ids, targets)
        grads = {n: p.grad.float().clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        results[fused] = (loss.item(), grads, eval_loss.item(), hits)
    (plain, plain_grads, plain_eval, plain_hits), (fused, fused_grads, fused_eval, fused_hits) = (
        results[False], results[True])
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    assert plain == pytest.approx(fused, rel=tolerance) and plain_eval == pytest.approx(fused_eval, rel=tolerance)
    for name, grad in plain_grads.items():
        assert (grad - fused_grads[name]).norm() <= 10 * tolerance * grad.norm() + 1e-12, name
    assert (plain_hits == fused_hits).float().mean() > 0.98  # ties in rounded logits may break differently
