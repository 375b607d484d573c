"""pytest tests/benchmarks/test_throughput.py — the throughput benchmark compares like with like: its Hugging Face
peer is our model (same weights, same function) and its FLOPs per token are the hand count.
"""
from __future__ import annotations

import pytest
import torch

from trainer.compute import flops_per_token
from trainer.config import ModelConfig
from trainer.model import GPT


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layers=2, n_heads=4, d_model=32, context_length=24, dropout=0.0, vocab_size=300))


def test_the_benchmarks_hf_peer_is_the_same_model(model):
    """benchmarks/throughput.py compares against GPT2LMHeadModel holding our weights: same function."""
    pytest.importorskip("transformers")
    from benchmarks import throughput as bench
    model.eval()
    ids, targets = torch.randint(0, 300, (2, 24)), torch.randint(0, 300, (2, 24))
    for attn in ("sdpa", "eager"):
        hf = bench.hf_model_like(model, attn).eval()
        with torch.no_grad():
            out = hf(input_ids=ids, labels=targets, shift_labels=targets)
            logits, loss = model(ids, targets)
        assert torch.allclose(out.logits, logits, atol=1e-5)
        assert out.loss.item() == pytest.approx(loss.item(), rel=1e-5)
    # The benchmarks' FLOPs are the ledger's (trainer/compute.py): every matmul weight of this model, 6 each.
    matmul_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    cfg = model.cfg
    assert flops_per_token(cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.context_length) == \
        6 * matmul_weights + 12 * cfg.n_layers * cfg.context_length * cfg.d_model

