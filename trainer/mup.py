"""μP, the Maximal Update Parametrization (Tensor Programs V, Yang et al. 2022) for AdamW, as five multipliers.

    python -m trainer --preset cpu --set model.parametrization=mup --set model.base_width=128 --set model.d_model=512

With `model.parametrization=mup` a model of width d_model is the `model.base_width` model with every
width-dependent quantity rescaled by width_mult = d_model / base_width, so that the learning rate (and the other
optimizer settings) tuned at base_width stay optimal as the width grows. At d_model == base_width μP is SP.

| what | SP (the seed's GPT-2 rules) | μP (AdamW; TP5 Table 3, microsoft/mup's MuAdamW) |
|---|---|---|
| hidden matrices (qkv, attention out, MLP in/out): init std | 0.02 | 0.02 / sqrt(width_mult) (variance ∝ 1/fan_in) |
| hidden matrices: learning rate | optim.lr | optim.lr / width_mult |
| hidden matrices: weight decay | optim.weight_decay | optim.weight_decay × width_mult (lr·wd as at base_width) |
| attention logits | q·k / sqrt(d_head) | q·k · sqrt(base d_head) / d_head (∝ 1/d_head) |
| output logits (tied token embedding) | h·Eᵀ | h·Eᵀ / width_mult (a readout multiplier) |
| embeddings, biases, LayerNorms | optim.lr, init as SP | the same |

The tied embedding: the token matrix E is both the input embedding and the output layer. Under μP both roles want
E at a width-independent init and learning rate (its fan-in is the vocabulary, not the width); only the readout
needs an extra 1/width, and that can be a multiplier on the logits instead of a separate matrix. This is what
microsoft/mup's `MuSharedReadout` does, and it keeps one parameter layout (and checkpoint format) for both
parametrizations and the fused output layer + cross-entropy unchanged: the multiplier is applied to the hidden
states before the output layer (h·m)·Eᵀ = m·(h·Eᵀ), so training loss, eval loss/hits and generation all see it.

Why not the `mup` package (1.0.0): it needs its own readout module (which bypasses our fused output layer), base
and delta models instantiated to infer shapes (`set_base_shapes`), and its own optimizer groups (MuAdamW) in
place of our decay/no-decay groups and the fused AdamW; the rules themselves are the few lines below.
Weight decay: torch's AdamW shrinks a weight by lr·wd per step, so with the hidden lr at 1/width_mult an
unchanged wd would decay the wide model's hidden matrices width_mult times less than the base model's. MuAdam(W)
multiplies their weight_decay by width_mult, keeping lr·wd, the shrink per step, at the base width's value.
"""
from __future__ import annotations

import math

from trainer.config import ModelConfig

VECTOR_LIKE = ("tok_emb", "pos_emb", "lm_head")  # matrices whose fan-in is not the width: base init and lr


def width_mult(cfg: ModelConfig) -> float:
    """d_model / base_width under μP; 1 under SP (nothing is rescaled)."""
    return cfg.d_model / cfg.base_width if cfg.parametrization == "mup" else 1.0


def hidden_init_scale(cfg: ModelConfig) -> float:
    """Factor on the hidden matrices' init std: 1/sqrt(width_mult), so their variance goes as 1/fan_in."""
    return 1.0 / math.sqrt(width_mult(cfg))


def attention_scale(cfg: ModelConfig) -> float | None:
    """The attention logits' factor under μP, sqrt(base d_head)/d_head; None under SP (the kernels' 1/sqrt(d_head))."""
    if cfg.parametrization != "mup":
        return None
    d_head = cfg.d_model / cfg.n_heads
    return math.sqrt(cfg.base_width / cfg.n_heads) / d_head


def readout_multiplier(cfg: ModelConfig) -> float:
    """Factor on the output logits: 1/width_mult (1 under SP)."""
    return 1.0 / width_mult(cfg)


def is_hidden_matrix(name: str, ndim: int) -> bool:
    """A width × width (or width × 4·width) matrix: its fan-in grows with the width."""
    return ndim >= 2 and not name.startswith(VECTOR_LIKE)


def weight_decay_scale(cfg: ModelConfig) -> float:
    """Factor on optim.weight_decay for the hidden matrices: width_mult, so that their lr·wd is the base's."""
    return width_mult(cfg)
