"""pytest tests/trainer/test_model_kernels.py — the model's fast paths keep the plain path's results: the fused
output layer inside a whole forward and backward (and the plain one CUDA takes), loss and hits in evaluation, the
CPU attention against SDPA, dropout against nn.Dropout's math. Tiny shapes: seconds.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer.config import ModelConfig
from trainer.model import GPT, dropout


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layers=2, n_heads=4, d_model=32, context_length=24, dropout=0.0, vocab_size=300))



def grads(model: GPT) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_training_forward_matches_the_logits_path(model, dtype):
    ids, targets = torch.randint(0, 300, (3, 24)), torch.randint(0, 300, (3, 24))
    model.train()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits, loss = model(ids, targets, return_logits=False)
    loss.backward()
    fast = grads(model)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        ref_logits, ref_loss = model(ids, targets)
    ref_loss.backward()
    ref = grads(model)
    assert logits is None and ref_logits.shape == (3, 24, 300)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6 if dtype is None else 1e-4)
    for name in ref:  # the tied embedding's sparse lookup gradient lands in the dense head gradient
        assert fast[name].layout == torch.strided and fast[name].shape == ref[name].shape
        assert rel(fast[name], ref[name]) < (1e-5 if dtype is None else 1e-3), name


def test_the_plain_output_layer_that_cuda_takes_matches_the_fused_one(model):
    """CUDA trains and evaluates through F.cross_entropy on the logits (GPT.fused_output picks by device); checked
    here on CPU by forcing it: the same loss, gradients and hits as the fused path."""
    assert model.uses_fused_output(torch.device("cpu")) and not model.uses_fused_output(torch.device("cuda"))
    ids, targets = torch.randint(0, 300, (3, 24)), torch.randint(0, 300, (3, 24))
    results = {}
    for fused in (True, False):
        model.fused_output = fused
        model.train()
        logits, loss = model(ids, targets, return_logits=False)
        loss.backward()
        model.eval()
        with torch.no_grad():
            results[fused] = (logits, loss.item(), grads(model), *model.loss_and_hits(ids, targets))
    (_, fused_loss, fused_grads, fused_eval, fused_hits), (logits, plain_loss, plain_grads, plain_eval, plain_hits) = (
        results[True], results[False])
    assert logits is None and plain_loss == pytest.approx(fused_loss, rel=1e-6)
    for name in fused_grads:
        assert rel(plain_grads[name], fused_grads[name]) < 1e-5, name
    assert plain_eval.item() == pytest.approx(fused_eval.item(), rel=1e-6) and torch.equal(plain_hits, fused_hits)


def test_loss_and_hits_match_the_logits(model):
    ids, targets = torch.randint(0, 300, (2, 24)), torch.randint(0, 300, (2, 24))
    model.eval()
    with torch.no_grad():
        logits, _ = model(ids)
        targets[:, ::2] = logits[:, ::2].argmax(dim=-1)
        loss, hits = model.loss_and_hits(ids, targets)
        _, ref_loss = model(ids, targets)
    assert hits.shape == targets.shape
    assert torch.equal(hits, logits.argmax(dim=-1) == targets)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)


def test_cpu_attention_matches_sdpa(model):
    attn = model.blocks[0].attn.eval()
    x = torch.randn(2, 24, 32)
    b, t, d = x.shape
    q, k, v = attn.qkv(x).view(b, t, 3, attn.n_heads, d // attn.n_heads).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    expected = attn.proj(y.transpose(1, 2).reshape(b, t, d))
    assert torch.allclose(attn(x), expected, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rel(attn(x), expected) < 2e-2


def test_dropout_keeps_nn_dropouts_math():
    torch.manual_seed(0)
    x = torch.ones(400_000, requires_grad=True)
    y = dropout(x, 0.1)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.9, abs=3e-3)
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x·mask/(1−p))/dx = mask/(1−p)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x
    torch.manual_seed(1)
    a = dropout(torch.ones(1000), 0.5)
    torch.manual_seed(1)
    assert torch.equal(a, dropout(torch.ones(1000), 0.5))  # seeded like the rest of training

