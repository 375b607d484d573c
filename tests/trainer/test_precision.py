"""pytest tests/trainer/test_precision.py — which autocast dtype a run gets (trainer/precision.py): `auto` is bf16
exactly where the hardware has it natively, fp32 on a CPU without it; the one-line warning for an emulated bf16.
"""
from __future__ import annotations

import pytest
import torch

from trainer import precision
from trainer.precision import cuda_autocast_dtype, resolve_precision

CPU = torch.device("cpu")


def test_explicit_precisions_are_taken_as_given():
    assert resolve_precision("fp32", CPU) is None
    assert resolve_precision("bf16", CPU) is torch.bfloat16
    assert resolve_precision("fp16", CPU) is torch.float16


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)], ids=["native", "emulated"])
def test_auto_on_a_cpu_is_bf16_exactly_where_it_is_native(monkeypatch, native, expected):
    asked = []
    monkeypatch.setattr(precision, "native_bf16", lambda device: asked.append(device.type) or native)
    assert resolve_precision("auto", CPU) is expected
    assert asked == ["cpu"]  # the probe of this device decided
    assert resolve_precision("fp32", CPU) is None  # an explicit choice is never overridden by the probe


def test_auto_on_a_gpu_asks_the_gpus_probe_and_capability(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: device.type == "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert resolve_precision("auto", torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert resolve_precision("auto", torch.device("cuda")) is torch.float16


def test_auto_precision_on_a_gpu_is_native_bf16_else_fp16_with_tensor_cores_else_fp32():
    assert cuda_autocast_dtype(True, (9, 0)) is torch.bfloat16  # H100/H200
    assert cuda_autocast_dtype(True, (8, 0)) is torch.bfloat16  # A100
    assert cuda_autocast_dtype(False, (7, 5)) is torch.float16  # T4: bf16 only emulated, fp16 tensor cores
    assert cuda_autocast_dtype(False, (7, 0)) is torch.float16  # V100
    assert cuda_autocast_dtype(False, (6, 1)) is None  # Pascal: fp32



@pytest.mark.parametrize("requested, native, device, warns", [
    ("bf16", False, "cpu", True), ("bf16", True, "cpu", False), ("auto", False, "cpu", False),
    ("fp32", False, "cpu", False), ("bf16", False, "cuda", False)])
def test_bf16_emulation_warning_only_for_an_explicit_bf16_on_a_cpu_without_it(monkeypatch, requested, native,
                                                                               device, warns):
    monkeypatch.setattr(precision, "native_bf16", lambda d: native if d.type == "cpu" else True)
    message = precision.emulation_warning(requested, torch.device(device))
    assert (message is not None) == warns
    if warns:
        assert "emulat" in message and f"~{precision.EMULATED_BF16_SLOWDOWN:.0f}x slower" in message


def test_the_trainer_prints_the_warning_once(smoke_trainer, monkeypatch, capsys):
    monkeypatch.setattr(precision, "native_bf16", lambda d: False)
    smoke_trainer(**{"train.precision": "bf16"})
    smoke_trainer(**{"train.precision": "auto"})
    assert capsys.readouterr().err.count("emulates it") == 1

