"""A small GPT (nanoGPT-style) and its classification wrapper.

    pytest tests/trainer/test_model.py

Pre-LN blocks, causal attention, GELU MLP, learned position embeddings, tied input/output embeddings, GPT-2
initialisation (residual projections scaled by 1/sqrt(2·layers)); with model.parametrization=mup, μP's init,
attention and readout multipliers (trainer/mup.py). Training and evaluation on CPU take the fused output layer +
cross-entropy (trainer/fused_loss.py: measured 2x faster there); on CUDA the plain path (logits in the autocast
dtype, then F.cross_entropy), which is NOT yet measured against the fused one there:
`python -m benchmarks.gpu --json` times both and a torch.compile'd model at equal loss (`output_layers`).
On CPU, attention and dropout use the plain-math versions below, which are 2–3× faster there than `F.scaled_dot_product_attention` and `nn.Dropout` at these sizes (the seed's
2 × 8 heads × 128² attention; measured with benchmarks/throughput.py); on GPU the fused SDPA kernels stay.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.config import ModelConfig
from trainer.fused_loss import WeightGradHandoff, linear_cross_entropy, tied_lookup
from trainer.mup import attention_scale, hidden_init_scale, readout_multiplier


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability p and scale the rest by 1/(1 − p): nn.Dropout's math.

    On CPU the mask comes from 32 random bits per element (one 64-bit draw per two elements) compared with
    round(p·2³²): p is honoured to 2⁻³² (finer than torch.rand's 24-bit floats), at ~40 % of the cost of
    `bernoulli_`, which dominated the non-matmul time of a CPU step. Elsewhere it is F.dropout.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    n = x.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-2**63, None).view(torch.int32)[:n].view(x.shape)
    threshold = round(p * 2**32)  # keep ⇔ bits ≥ threshold − 2³¹, probability exactly 1 − threshold/2³²
    keep = (bits >= threshold - 2**31).view(torch.uint8)  # 0/1 bytes convert faster than bools
    return x * keep.to(x.dtype).mul_(2**32 / (2**32 - threshold))


class Dropout(nn.Module):
    """nn.Dropout with the cheaper CPU mask of `dropout`."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj.is_residual_projection = True
        self.dropout = cfg.dropout
        self.scale = attention_scale(cfg)  # None: 1/sqrt(d_head) (SP); μP's 1/d_head otherwise
        self.resid_dropout = Dropout(cfg.dropout)
        # Which (query, key) pairs look ahead; not in the state_dict, so checkpoints are unchanged.
        future = torch.ones(cfg.context_length, cfg.context_length, dtype=torch.bool).triu_(1)
        self.register_buffer("future", future, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if x.device.type == "cpu":
            # softmax(q·kᵀ/√d_head, future masked) · v, as SDPA's math path, in 2 bmm + 3 passes over the scores.
            att = (q * (q.shape[-1] ** -0.5 if self.scale is None else self.scale)) @ k.transpose(-2, -1)
            att = att.masked_fill_(self.future[:t, :t], float("-inf")).softmax(dim=-1)  # in place: a fresh product
            y = dropout(att, p) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p, scale=self.scale)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.proj.is_residual_projection = True
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    # The output layer + loss: None picks by device (fused on CPU, plain on CUDA; see the module docstring);
    # True or False forces one (benchmarks/gpu.py times both on a GPU).
    fused_output: bool | None = None

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying: one matrix reads and writes tokens
        # μP (trainer/mup.py): the logits times 1/width_mult, applied to the hidden states before every use of the
        # tied output layer (fused loss, eval, generate); 1.0 under SP, where no multiplication happens at all.
        self.readout_mult = readout_multiplier(cfg)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            # GPT-2: residual projections shrink with depth so the residual stream's variance stays ~constant.
            scale = 1 / math.sqrt(2 * self.cfg.n_layers) if getattr(module, "is_residual_projection", False) else 1
            if module is not self.lm_head and self.cfg.parametrization == "mup":
                scale *= hidden_init_scale(self.cfg)  # variance ∝ 1/fan_in; the tied readout keeps 0.02
            nn.init.normal_(module.weight, mean=0.0, std=0.02 * scale)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def uses_fused_output(self, device: torch.device) -> bool:
        return device.type == "cpu" if self.fused_output is None else self.fused_output

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() yields the tied matrix once

    def hidden_states(self, ids: torch.Tensor, handoff: WeightGradHandoff | None = None) -> torch.Tensor:
        """(batch, time) token ids → (batch, time, d_model) after the final LayerNorm.

        handoff: the fused output layer's gradient of the tied matrix arrives there and the token lookup adds
        its rows into it (trainer.fused_loss.tied_lookup); only for a loss through the same matrix.
        """
        t = ids.shape[1]
        if t > self.cfg.context_length:
            raise ValueError(f"sequence of {t} tokens exceeds model.context_length={self.cfg.context_length}")
        tokens = self.tok_emb(ids) if handoff is None else tied_lookup(ids, self.tok_emb.weight, handoff)
        x = self.drop(tokens + self.pos_emb(torch.arange(t, device=ids.device)))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def readout_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """The hidden states the output layer reads: times μP's readout multiplier, unchanged under SP."""
        return hidden if self.readout_mult == 1.0 else hidden * self.readout_mult

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, return_logits: bool = True):
        """Logits (batch, time, vocab); with targets, also the mean next-token cross-entropy (in fp32).

        return_logits=False (training) returns (None, loss) through the fused output layer + cross-entropy,
        which never materializes the (tokens × vocab) logits in fp32: same loss and gradients, far less memory
        traffic (see trainer/fused_loss.py).
        """
        if targets is not None and not return_logits and not self.uses_fused_output(ids.device):
            logits = self.lm_head(self.readout_input(self.hidden_states(ids)))
            return None, F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        if targets is not None and not return_logits:
            # On CPU the tied matrix's two gradients meet in one tensor (a fresh 50,257 × d one costs page
            # faults there); CUDA keeps autograd's own deterministic embedding backward.
            handoff = WeightGradHandoff() if ids.device.type == "cpu" else None
            hidden = self.readout_input(self.hidden_states(ids, handoff))
            return None, linear_cross_entropy(hidden.flatten(0, 1), self.lm_head.weight, targets.flatten(),
                                              handoff=handoff)
        logits = self.lm_head(self.readout_input(self.hidden_states(ids)))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return logits, loss

    def loss_and_hits(self, ids: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean cross-entropy and, per position (batch, time), whether the most likely next token (the
        logits' argmax) is the target: val_loss and val_acc, through the fused path, without the logits."""
        hidden = self.readout_input(self.hidden_states(ids))
        if not self.uses_fused_output(ids.device):
            logits = self.lm_head(hidden)
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten()), logits.argmax(dim=-1) == targets
        loss, hits = linear_cross_entropy(hidden.flatten(0, 1), self.lm_head.weight, targets.flatten(),
                                          return_hits=True)
        return loss, hits.view_as(targets)

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to ids (batch, time); temperature 0 is greedy."""
        for _ in range(max_new_tokens):
            # Only the last position's logits are used: the output layer runs on that one row.
            hidden = self.hidden_states(ids[:, -self.cfg.context_length:])[:, -1]
            logits = self.lm_head(self.readout_input(hidden)).float()
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                next_id = torch.multinomial(_filtered_probs(logits / temperature, top_k, top_p), 1, generator=generator)
            ids = torch.cat([ids, next_id], dim=1)
        return ids


def _filtered_probs(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Softmax over the top-k tokens and/or the smallest set whose probability reaches top_p (nucleus)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Drop a token when the tokens ranked above it already reach top_p; the top token always stays.
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


class GPTClassifier(nn.Module):
    """The pretrained GPT plus a linear head on the hidden state of each sequence's last real token (`last`), or on
    the mean over its real tokens (`mean`: every position's state reaches the head, which a small model trained
    briefly needs; its last token alone has seen the text through few layers).

    Sequences are right-padded; pooling position `lengths - 1` (not -1, which would be a pad token), or only the
    first `lengths` positions, makes the prediction independent of how much padding follows.
    """

    def __init__(self, gpt: GPT, num_classes: int, pooling: str = "last"):
        super().__init__()
        self.gpt, self.pooling = gpt, pooling
        self.head = nn.Linear(gpt.cfg.d_model, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.gpt.hidden_states(ids)
        lengths = lengths.to(ids.device)
        if self.pooling == "mean":
            real = (torch.arange(ids.shape[1], device=ids.device) < lengths[:, None]).to(hidden.dtype)
            return self.head((hidden * real[..., None]).sum(1) / lengths[:, None].to(hidden.dtype))
        return self.head(hidden[torch.arange(ids.shape[0], device=ids.device), lengths - 1])
