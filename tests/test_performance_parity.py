"""pytest tests/test_performance_parity.py — every speed-up keeps the results: fused vs plain, fast vs torch.

Each optimization of the training step has its plain counterpart here: the fused output layer + cross-entropy
(loss, gradients, argmax; fp32 tight, bf16/fp16 under autocast loose), the CPU attention and dropout against
SDPA and nn.Dropout's math, the fused AdamW against foreach, and whole training steps and evaluation against
the plain path. Tiny shapes: the file runs in seconds.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import trainer.fused_loss as fused_loss
from trainer.compute import flops_per_token
from trainer.config import ModelConfig, build_config
from trainer.fused_loss import linear_cross_entropy
from trainer.model import GPT, dropout


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def plain(hidden, weight, targets, dtype=None):
    """The pre-fusion path: F.linear (under autocast when dtype is given), then fp32 cross-entropy."""
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits = F.linear(h, w)
        loss = F.cross_entropy(logits.float(), targets)
    loss.backward()
    return loss, h.grad, w.grad, logits.detach()


def fused(hidden, weight, targets, dtype=None):
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = linear_cross_entropy(h, w, targets)
    loss.backward()
    return loss, h.grad, w.grad


@pytest.fixture
def problem():
    torch.manual_seed(0)
    n, d, vocab = 203, 48, 1000  # 203 rows: several chunks of CHUNK_ROWS, the last one short
    return torch.randn(n, d), torch.randn(vocab, d) * 0.2, torch.randint(0, vocab, (n,))


@pytest.fixture(params=["one block", "several blocks"])
def blocks(request, monkeypatch):
    if request.param == "several blocks":  # 64 rows per block: the weight gradient accumulates over 4 blocks
        monkeypatch.setattr(fused_loss, "BLOCK_ELEMENTS", 64 * 1000)
    return request.param


def test_fused_loss_and_gradients_match_the_plain_path_in_fp32(problem, blocks):
    loss, gh, gw = fused(*problem)
    ref_loss, ref_gh, ref_gw, _ = plain(*problem)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert rel(gh, ref_gh) < 1e-5 and rel(gw, ref_gw) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_loss_under_autocast_matches_the_plain_path_loosely(problem, blocks, dtype):
    loss, gh, gw = fused(*problem, dtype=dtype)
    ref_loss, ref_gh, ref_gw, _ = plain(*problem, dtype=dtype)
    exact_loss, exact_gh, exact_gw, _ = plain(*problem)
    assert loss.dtype == torch.float32 and gh.dtype == gw.dtype == torch.float32
    # Same rounded logits → the same loss up to fp32 summation order.
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    # The gradients differ from the plain autocast path only by where the 16-bit roundings fall (and, with
    # several blocks, by the weight gradient's per-block partial sums being rounded to bf16).
    tolerance = 2e-3 if dtype == torch.float16 else 1e-3 if blocks == "one block" else 5e-3
    assert rel(gh, ref_gh) < tolerance and rel(gw, ref_gw) < tolerance
    # And neither is further from the fp32 truth than 16-bit logits allow.
    assert rel(gh, exact_gh) < 3 * max(rel(ref_gh, exact_gh), 1e-3)
    assert rel(gw, exact_gw) < 3 * max(rel(ref_gw, exact_gw), 1e-3)


def test_backward_scales_by_the_incoming_gradient(problem):
    h = problem[0].clone().requires_grad_()
    w = problem[1].clone().requires_grad_()
    (3.0 * linear_cross_entropy(h, w, problem[2])).backward()
    _, ref_gh, ref_gw, _ = plain(*problem)
    assert rel(h.grad, 3 * ref_gh) < 1e-5 and rel(w.grad, 3 * ref_gw) < 1e-5


def test_no_grad_evaluation_gives_the_loss_and_the_hits_of_the_logits_argmax(problem):
    hidden, weight, targets = problem
    targets = targets.clone()
    with torch.no_grad():
        logits = hidden @ weight.t()
        targets[::3] = logits[::3].argmax(dim=1)  # a third of the rows are hits
        loss, hits = linear_cross_entropy(hidden, weight, targets, return_hits=True)
    assert not loss.requires_grad and hits.dtype == torch.bool
    assert loss.item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    assert torch.equal(hits, logits.argmax(dim=1) == targets) and hits.sum() >= len(targets) // 3


def test_hits_follow_argmax_on_ties():
    # The logits tie; torch.argmax takes the first maximal class, so only that one is a hit.
    hidden = torch.ones(3, 1)
    weight = torch.tensor([[1.0], [2.0], [2.0], [0.5]])
    _, hits = linear_cross_entropy(hidden, weight, torch.tensor([1, 2, 3]), return_hits=True)
    assert hits.tolist() == [True, False, False]


def test_hits_under_autocast_are_those_of_the_rounded_logits(problem):
    hidden, weight, _ = problem
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        targets = F.linear(hidden, weight).argmax(dim=1)
        _, hits = linear_cross_entropy(hidden, weight, targets, return_hits=True)
    assert hits.float().mean().item() > 0.99  # a tie in bf16 may break differently


def test_extreme_logits_give_a_finite_exact_loss():
    # A target 200 nats below the best class: p_target underflows fp32, log-sum-exp must not.
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    weight = torch.tensor([[100.0, 0.0], [-100.0, 0.0], [0.0, 3.0]])
    targets = torch.tensor([1, 2])
    loss = linear_cross_entropy(hidden, weight, targets)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(F.cross_entropy(hidden @ weight.t(), targets).item(), rel=1e-6)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="expected hidden"):
        linear_cross_entropy(torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 3, dtype=torch.long))


# --- the model ------------------------------------------------------------------------------------------
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


def test_fused_adamw_matches_foreach(model):
    cfg = build_config("smoke")
    from trainer.loop import make_optimizer

    optimizer = make_optimizer(model, cfg.optim, torch.device("cpu"))
    assert optimizer.defaults["fused"]
    twin = GPT(model.cfg)
    twin.load_state_dict(model.state_dict())
    names = {id(p): n for n, p in model.named_parameters()}
    twins = dict(twin.named_parameters())
    groups = [{"params": [twins[names[id(p)]] for p in g["params"]], "weight_decay": g["weight_decay"]}
              for g in optimizer.param_groups]
    reference = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, foreach=True)
    torch.manual_seed(0)
    for _ in range(3):
        for name, p in model.named_parameters():
            p.grad = torch.randn_like(p) * 1e-2
            twins[name].grad = p.grad.clone()
        optimizer.step()
        reference.step()
    for name, p in model.named_parameters():
        assert torch.allclose(p, twins[name], atol=1e-7, rtol=1e-5), name


# --- the benchmark's peer --------------------------------------------------------------------------------
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


def test_tied_lookup_alone_has_the_embedding_gradient():
    from trainer.fused_loss import WeightGradHandoff, tied_lookup

    weight = torch.randn(50, 8, requires_grad=True)
    ids = torch.tensor([[1, 2, 2], [7, 1, 0]])
    upstream = torch.randn(2, 3, 8)
    (tied_lookup(ids, weight, WeightGradHandoff()) * upstream).sum().backward()  # no output layer handed over
    fast = weight.grad.clone()
    weight.grad = None
    (F.embedding(ids, weight) * upstream).sum().backward()
    assert torch.allclose(fast, weight.grad, atol=1e-6)
