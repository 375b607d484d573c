"""pytest tests/trainer/test_fused_loss.py — the fused output layer + cross-entropy (trainer/fused_loss.py) against
the plain F.linear + F.cross_entropy: loss, gradients and argmax hits; fp32 tight, bf16/fp16 under autocast loose.

The model's other fast paths (attention, dropout, the output layer in a whole forward): test_model_kernels.py.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import trainer.fused_loss as fused_loss
from trainer.fused_loss import linear_cross_entropy


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
