"""Which autocast dtype a run gets, and one line of warning where bf16 would only be emulated.

    python -m trainer --preset cpu --set train.precision=bf16 ...   (prints the warning on a CPU without bf16)

`auto` picks bf16 only where the hardware does it natively (a GPU with bf16 tensor cores, or a CPU with avx512_bf16 /
AMX, which oneDNN reports through torch.ops.mkldnn._is_mkldnn_bf16_supported()); a GPU without them gets fp16
with a GradScaler (or fp32 before Volta), a CPU without them fp32.
"""
from __future__ import annotations

import contextlib
import sys

import torch

# Measured on AMD EPYC family 25 (AVX2 only, no avx512_bf16), torch 2.13.0+cpu, one thread, the cpu preset's
# model (bpe:2048, 2 x 128, context 128, batch 16): 2.98-3.01 s of CPU per training step under bf16 autocast
# against 0.37-0.40 s in fp32 (two alternations of 8 steps each).
EMULATED_BF16_SLOWDOWN = 8.0


def native_bf16(device: torch.device) -> bool:
    """bf16 done by the hardware: tensor cores that have it (not emulation, which is slower than fp16 on a T4 or
    V100), or oneDNN's avx512_bf16 / AMX kernels on a CPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. `auto` picks bf16 wherever the hardware does it natively, and on
    a GPU without it fp16 or fp32 (`cuda_autocast_dtype`)."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "auto" and device.type == "cuda":
        return cuda_autocast_dtype(native_bf16(device), torch.cuda.get_device_capability(device))
    if precision == "bf16" or native_bf16(device):
        return torch.bfloat16
    return None


def cuda_autocast_dtype(bf16_native: bool, capability: tuple[int, int]) -> torch.dtype | None:
    """`auto` on a GPU: bf16 where the tensor cores do it (Ampere, sm_80, and later; emulated bf16 on a T4 or V100
    is slower than fp16), else fp16 with the loop's GradScaler where there are fp16 tensor cores (Volta, sm_70,
    and later), else fp32 (older GPUs: fp16 there is no faster, or far slower)."""
    if bf16_native:
        return torch.bfloat16
    return torch.float16 if tuple(capability) >= (7, 0) else None


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """The context a run's forward passes run in (pre-training and fine-tuning alike): autocast to `dtype`
    (resolve_precision), or none for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def emulation_warning(precision: str, device: torch.device) -> str | None:
    """The one line to print when an explicit bf16 would run emulated on this CPU, else None."""
    if precision != "bf16" or device.type != "cpu" or native_bf16(device):
        return None
    return (f"warning: train.precision=bf16 on a CPU without native bf16 (no avx512_bf16 or AMX): torch emulates "
            f"it, ~{EMULATED_BF16_SLOWDOWN:.0f}x slower than fp32 as measured on an AVX2-only AMD EPYC; "
            "use train.precision=auto (fp32 here)")


def warn_if_emulated(precision: str, device: torch.device) -> None:
    message = emulation_warning(precision, device)
    if message:
        print(message, file=sys.stderr, flush=True)
