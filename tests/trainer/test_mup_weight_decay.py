"""μP's weight decay: a hidden matrix shrinks by the same lr·wd per step at every width (MuAdamW's rule).

    pytest tests/trainer/test_mup_weight_decay.py
"""
from __future__ import annotations

import pytest
import torch

from trainer.config import ModelConfig, build_config
from trainer.loop import make_optimizer
from trainer.model import GPT


def shrink_per_step(parametrization: str, d_model: int) -> float:
    """How much one AdamW step with zero gradients (so no Adam update, only the decoupled decay) scales the first
    MLP matrix of a model of this width, at the lr the training loop gives that matrix's group."""
    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=d_model, context_length=8, vocab_size=40, dropout=0.0,
                      parametrization=parametrization, base_width=16)
    torch.manual_seed(0)
    model = GPT(cfg)
    optim = build_config("smoke", {"optim.weight_decay": 0.1}).optim
    optimizer = make_optimizer(model, optim, torch.device("cpu"))
    for group in optimizer.param_groups:
        group["lr"] = optim.lr * group["lr_scale"]  # as trainer.loop.Pretrainer.train_step sets it
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    weight = model.blocks[0].mlp.fc.weight
    before = weight.detach().clone()
    optimizer.step()
    return (weight.detach() / before).mean().item()


def test_mup_hidden_decay_per_step_is_the_base_widths_at_every_width():
    lr_wd = build_config("smoke").optim.lr * 0.1
    base = shrink_per_step("mup", 16)
    assert base == pytest.approx(1 - lr_wd, rel=1e-6)
    for width in (32, 128):
        assert shrink_per_step("mup", width) == pytest.approx(base, rel=1e-6)  # lr/m × wd·m = lr·wd


def test_sp_hidden_decay_is_lr_times_wd_whatever_the_width():
    lr_wd = build_config("smoke").optim.lr * 0.1
    for width in (16, 128):
        assert shrink_per_step("sp", width) == pytest.approx(1 - lr_wd, rel=1e-6)
