"""Fused output layer + cross-entropy: the loss and its gradients without the fp32 (tokens × vocab) logits.

    pytest tests/trainer/test_fused_loss.py

With a 50,257-token vocabulary the output layer dominates a small GPT's step, and the plain path spends more
time moving its logits than multiplying them: bf16 logits, an fp32 copy, fp32 log-probabilities, their gradient,
a zero-filled NLL gradient and a bf16 copy of that, each 0.2–0.4 GB per 2,048 tokens, most of them freshly
allocated (on CPU: fresh pages, each faulted in on first touch). Here (the Liger-kernel trick, as a
`torch.autograd.Function`) the logits are computed block by block in the compute dtype (autocast's, else the
inputs'); softmax, log-sum-exp and the loss run in fp32 on row chunks small enough to stay in cache; the chunk's
softmax gradient p − onehot is written back over its logits in the compute dtype; and the gradients of the hidden
states and of the weight come from two large matmuls over the block, inside the forward. The backward only
scales them by the incoming gradient. The math is the plain path's: loss = mean(logsumexp(z) − z[target]) with
z = hidden · weightᵀ rounded to the compute dtype (as autocast's F.linear), gradients (softmax(z) − onehot)/N
rounded once to the compute dtype before the matmuls (as autocast's backward), accumulated in fp32.

For a tied embedding, `tied_lookup` lets the token lookup add its rows into the output layer's weight gradient
in place, so the shared matrix gets one gradient tensor instead of two summed into a third.
"""
from __future__ import annotations

import torch

# Rows of logits per block: the block's logits (then its softmax gradient) live in one buffer that the two
# gradient matmuls read; 2^27 elements keep GPT-2's vocabulary at 2,670 rows (256 MB in bf16) per block, so the
# seed's 16 × 128 tokens take one block and the weight gradient is one matmul per step.
BLOCK_ELEMENTS = 1 << 27
# Rows per fp32 softmax chunk: two 32 × 50,257 × 4 B ≈ 6.4 MB buffers stay in L3 across the chunk's passes.
CHUNK_ROWS = 32
# On a GPU a chunk costs several kernel launches and, in evaluation, one host sync: far fewer, larger chunks there
# (two 512 × 50,257 × 4 B ≈ 103 MB buffers). A guess, not yet measured (benchmarks/gpu.py times this path).
GPU_CHUNK_ROWS = 512

# On CPU a fresh tensor of more than 32 MB is a fresh mmap (glibc), and every page faults on first touch: ~2 µs
# per 4 kB page in a VM, ~0.1 s per step for a 206 MB logits block. So the CPU buffers are kept between calls
# (one set per process; a Pretrainer runs in one thread).
_scratch: dict[tuple, torch.Tensor] = {}


def _buffer(name: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if device.type != "cpu":  # CUDA's caching allocator already reuses blocks
        return torch.empty(numel, dtype=dtype, device=device)
    key = (name, dtype, device)
    buf = _scratch.get(key)
    if buf is None or buf.numel() < numel:
        buf = _scratch[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel]


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _loss_and_grads(x: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, grad_scale: float | None,
                    need_hits: bool):
    """x (N, d), w (V, d) in the compute dtype. Returns the fp32 summed loss, the hits (or None), and
    G·w (compute dtype) and Gᵀ·x (fp32), or Nones, where G = (p − onehot)·grad_scale rounded to the compute dtype.
    """
    n, vocab = x.shape[0], w.shape[0]
    block_rows = max(1, min(n, BLOCK_ELEMENTS // vocab))
    logits_buf = _buffer("logits", block_rows * vocab, x.dtype, x.device)
    # fp32 work space: a copy of a chunk's logits (unless they are fp32 already), and its softmax.
    chunk_rows = CHUNK_ROWS if x.device.type == "cpu" else GPU_CHUNK_ROWS
    copy_buf = None if x.dtype == torch.float32 else _buffer("chunk", chunk_rows * vocab, torch.float32, x.device)
    probs_buf = _buffer("probs", chunk_rows * vocab, torch.float32, x.device)
    loss = torch.zeros((), dtype=torch.float32, device=x.device)
    hits = torch.empty(n, dtype=torch.bool, device=x.device) if need_hits else None
    need_grad = grad_scale is not None
    grad_x = torch.empty_like(x) if need_grad else None
    grad_w = None
    for b0 in range(0, n, block_rows):
        rows = min(block_rows, n - b0)
        z = logits_buf[:rows * vocab].view(rows, vocab)
        torch.mm(x[b0:b0 + rows], w.t(), out=z)
        t_block = targets[b0:b0 + rows]
        z_target = z.gather(1, t_block[:, None]).float()  # the rounded logit, as the plain path sees it
        for c0 in range(0, rows, chunk_rows):
            c = min(chunk_rows, rows - c0)
            zc = z[c0:c0 + c]
            zf = zc if copy_buf is None else copy_buf[:c * vocab].view(c, vocab).copy_(zc)
            m = zf.amax(dim=1, keepdim=True)
            if hits is not None:
                hits[b0 + c0:b0 + c0 + c] = _hits(zf, m, z_target[c0:c0 + c], t_block[c0:c0 + c])
            p = torch.ops.aten._softmax.out(zf, 1, False, out=probs_buf[:c * vocab].view(c, vocab))
            # log-sum-exp = max − log(max p): the largest probability is 1/Σexp(z − max) ≥ 1/vocab, so this
            # never underflows, and it costs one cheap reduction instead of a second pass of exp.
            loss += (m - p.amax(dim=1, keepdim=True).log_() - z_target[c0:c0 + c]).sum()
            if need_grad:  # d loss/dz = (p − onehot)·grad_scale, rounded once into the chunk's logits
                p[torch.arange(c, device=x.device), t_block[c0:c0 + c]] -= 1.0
                zc.copy_(p if grad_scale == 1.0 else p.mul_(grad_scale))
        if need_grad:
            torch.mm(z, w, out=grad_x[b0:b0 + rows])
            # xᵀ·G gives the weight gradient as (d, vocab), ~15 % faster than Gᵀ·x with oneDNN on CPU; the
            # transposing copy into the fp32 (vocab, d) gradient costs less than that.
            block_grad_w = torch.mm(x[b0:b0 + rows].t(), z).t()
            if grad_w is None:
                grad_w = torch.empty(w.shape, dtype=torch.float32, device=w.device).copy_(block_grad_w)
            else:
                grad_w += block_grad_w
    return loss, hits, grad_x, grad_w


def _hits(z: torch.Tensor, m: torch.Tensor, z_target: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """argmax(z) == target per row, without an argmax over the vocabulary (4× a softmax's cost on CPU): the
    target must hold the maximum, and, as argmax takes the first maximal index, no earlier class may tie."""
    hit = (z_target == m)[:, 0]
    rows = hit.nonzero()[:, 0]
    if rows.numel():
        hit[rows] = (z[rows] == m[rows]).int().argmax(dim=1) == targets[rows]
    return hit


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, compute_dtype, need_grad, need_hits, handoff):
        n = targets.numel()
        # The mean's 1/N goes into the gradient before it is rounded to the compute dtype, as on the plain path;
        # except in fp16, whose range would flush (p − onehot)/N to zero for small p: there it comes after.
        grad_scale = (1.0 if compute_dtype == torch.float16 else 1.0 / n) if need_grad else None
        with torch.autocast(hidden.device.type, enabled=False):
            x = hidden.to(compute_dtype)
            w = weight if weight.dtype == compute_dtype else _buffer(
                "weight", weight.numel(), compute_dtype, weight.device).view(weight.shape).copy_(weight)
            loss_sum, hits, grad_x, grad_w = _loss_and_grads(x, w, targets, grad_scale, need_hits)
        if need_grad:
            grad_x, grad_w = grad_x.to(hidden.dtype), grad_w.to(weight.dtype)
            if grad_scale == 1.0:
                grad_x, grad_w = grad_x.mul_(1.0 / n), grad_w.mul_(1.0 / n)
            ctx.grads, ctx.handoff = (grad_x, grad_w), handoff
        if hits is not None:
            ctx.mark_non_differentiable(hits)
        return loss_sum / n, hits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_hits):
        grad_x, grad_w = ctx.grads
        del ctx.grads
        # loss.backward() seeds 1: skip two passes then (checked on CPU only, where .item() costs no sync).
        if grad_loss.device.type != "cpu" or grad_loss.item() != 1.0:
            grad_x, grad_w = grad_x.mul_(grad_loss), grad_w.mul_(grad_loss)
        if ctx.handoff is not None:  # the tied token lookup adds its rows and delivers the sum
            ctx.handoff.grad, grad_w = grad_w, None
        return grad_x, grad_w, None, None, None, None, None


class WeightGradHandoff:
    """Carries the output layer's gradient of a tied matrix to the token lookup's backward (see `tied_lookup`)."""

    grad: torch.Tensor | None = None


class _TiedLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, weight, handoff):
        ctx.save_for_backward(ids)
        ctx.handoff, ctx.weight_shape, ctx.weight_dtype = handoff, weight.shape, weight.dtype
        return torch.nn.functional.embedding(ids, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (ids,) = ctx.saved_tensors
        grad, ctx.handoff.grad = ctx.handoff.grad, None
        if grad is None:  # the output layer did not contribute (e.g. its loss was not part of this backward)
            grad = torch.zeros(ctx.weight_shape, dtype=ctx.weight_dtype, device=grad_out.device)
        grad.index_add_(0, ids.flatten(), grad_out.reshape(-1, grad.shape[1]).to(grad.dtype))
        return None, grad, None


def tied_lookup(ids: torch.Tensor, weight: torch.Tensor, handoff: WeightGradHandoff) -> torch.Tensor:
    """F.embedding(ids, weight) for a matrix that is also the output layer of `linear_cross_entropy(...,
    handoff=handoff)` in the same graph: the lookup's rows are added into the output layer's gradient, in
    place, and the sum reaches the parameter as its only gradient. Otherwise autograd would make a zero-filled
    (vocab × d) gradient for the lookup and sum the two into a third (~30 ms per step at GPT-2's vocabulary on
    CPU, mostly page faults). The output layer's backward always runs first: the lookup's needs its result."""
    return _TiedLookup.apply(ids, weight, handoff)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         return_hits: bool = False, handoff: WeightGradHandoff | None = None):
    """mean(cross_entropy(hidden @ weight.T, targets)) as an fp32 scalar, never holding fp32 (N, vocab) logits.

    hidden (N, d), weight (vocab, d), targets (N,) int64, every target a valid class (no ignore_index). Under
    autocast the logits are rounded to the autocast dtype (as `F.linear` would be); otherwise to the inputs'
    dtype. With return_hits, returns (loss, hits): (N,) bool, whether each row's most likely class (its first
    maximal logit, as torch.argmax) is the target: next-token accuracy without an argmax over the vocabulary.
    Gradients are computed during the forward, and only when grad mode is on and an input requires them.
    With a handoff, the weight's gradient goes to the `tied_lookup` that shares it instead of to autograd.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"expected hidden (N, d), weight (V, d), targets (N,); got {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(targets.shape)}")
    # Inside Function.forward grad mode is always off, and needs_input_grad ignores it: decide here, so that
    # evaluation under no_grad skips the gradient matmuls.
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    loss, hits = _LinearCrossEntropy.apply(hidden, weight, targets, _compute_dtype(hidden, weight), need_grad,
                                           return_hits, handoff)
    return (loss, hits) if return_hits else loss
