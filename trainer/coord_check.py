"""The μP coordinate check (Tensor Programs V, §D.1): how activation size scales with width after a few steps.

    python -m trainer.coord_check            # prints the log-log slope of each activation's RMS vs width

For each width, a GPT takes a few AdamW steps (the real optimizer groups, so μP's lr scales apply) on one
fixed random batch; then the RMS of the embedding output, each block's output and the logits are measured on
that batch. Under μP every slope of log2 RMS against log2 width is ≈ 0 (the network's activations and their
updates stay the same size as it widens); under SP they grow, the logits fastest: an lr tuned at one width is too
large at a wider one. A pure function of its arguments; seconds on a CPU for widths 32…512.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from trainer.config import ModelConfig, OptimConfig
from trainer.loop import make_optimizer
from trainer.model import GPT

WIDTHS = (32, 64, 128, 256, 512)


def _batch(vocab: int, context: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(vocab, (batch, context + 1), generator=torch.Generator().manual_seed(seed))
    return ids[:, :-1], ids[:, 1:]


def activation_rms(parametrization: str, width: int, base_width: int = 32, steps: int = 3, lr: float = 1e-2,
                   n_layers: int = 2, n_heads: int = 4, vocab: int = 256, context: int = 16, batch: int = 4,
                   seed: int = 0) -> dict[str, float]:
    """{"embedding": rms, "block_0": rms, ..., "logits": rms} after `steps` AdamW steps at lr (no decay, no clip)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layers=n_layers, n_heads=n_heads, d_model=width, context_length=context, dropout=0.0,
                      vocab_size=vocab, parametrization=parametrization, base_width=base_width)
    model = GPT(cfg)
    optimizer = make_optimizer(model, OptimConfig(lr=lr, weight_decay=0.0), torch.device("cpu"))
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    x, y = _batch(vocab, context, batch, seed)
    for _ in range(steps):
        _, loss = model(x, y, return_logits=False)  # the fused training path, with μP's readout multiplier
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seen: dict[str, float] = {}
    rms = lambda name: lambda _m, _i, out: seen.__setitem__(name, out.detach().pow(2).mean().sqrt().item())
    hooks = [model.drop.register_forward_hook(rms("embedding")), model.lm_head.register_forward_hook(rms("logits"))]
    hooks += [b.register_forward_hook(rms(f"block_{i}")) for i, b in enumerate(model.blocks)]
    model.eval()
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return {k: seen[k] for k in ("embedding", *(f"block_{i}" for i in range(n_layers)), "logits")}


def coord_check(parametrization: str, widths=WIDTHS, **kwargs) -> dict[str, dict[int, float]]:
    """{activation: {width: rms}} for one parametrization."""
    per_width = {w: activation_rms(parametrization, w, **kwargs) for w in widths}
    return {name: {w: per_width[w][name] for w in widths} for name in per_width[widths[0]]}


def slopes(rms: dict[str, dict[int, float]]) -> dict[str, float]:
    """The least-squares slope of log2 RMS against log2 width, per activation: 0 is width-independent,
    0.5 is ∝ sqrt(width), 1 is ∝ width."""
    out = {}
    for name, by_width in rms.items():
        widths = sorted(by_width)
        out[name] = float(np.polyfit(np.log2(widths), np.log2([by_width[w] for w in widths]), 1)[0])
    return out


def main() -> int:
    torch.set_num_threads(1)
    for parametrization in ("sp", "mup"):
        rms = coord_check(parametrization)
        print(parametrization, " ".join(f"{k}: {v:+.2f}" for k, v in slopes(rms).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
