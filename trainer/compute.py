"""The compute ledger of a run: parameters, tokens seen, training FLOPs, wall and device seconds.

    python -m trainer --preset smoke ...    (every eval's metrics carry tokens, flops, n_params, ...)

One FLOP convention everywhere (the one benchmarks/throughput.py uses): per training token
    6 · (every matmul weight: attention qkv/proj, MLP fc/proj and the OUTPUT LAYER, tied to the embedding)
  + 12 · n_layers · context_length · d_model   (attention scores and values over the full context)
Embedding lookups, biases, LayerNorms, softmax and the optimizer are not counted; evaluation is not counted
(these are training FLOPs). `n_params_non_embedding` is what scaling laws call N (Kaplan et al.): every
parameter except the token and position tables. The output layer's weights are that token table (tied), so its
FLOPs are counted while its parameters are not part of N: say so beside any fit that uses both.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.config import ModelConfig


def non_embedding_params(d_model: int, n_layers: int) -> int:
    """Per block: qkv 3d²+3d, attention proj d²+d, MLP fc 4d²+4d and proj 4d²+d, two LayerNorms 4d; then ln_f 2d."""
    d = d_model
    return n_layers * (12 * d * d + 13 * d) + 2 * d


def embedding_params(d_model: int, vocab_size: int, context_length: int) -> int:
    """The token table (also the output layer: tied) and the learned position table."""
    return (vocab_size + context_length) * d_model


def flops_per_token(d_model: int, n_layers: int, vocab_size: int, context_length: int) -> float:
    """Training FLOPs per token by this module's convention (forward + backward = 3 × forward's 2 per weight)."""
    matmul_weights = 12 * n_layers * d_model * d_model + vocab_size * d_model
    return 6.0 * matmul_weights + 12.0 * n_layers * context_length * d_model


@dataclass(frozen=True)
class ComputeLedger:
    """What one run of a model config costs, per token and in total at a given step."""
    n_params: int
    n_params_non_embedding: int
    flops_per_token: float
    tokens_per_step: int

    @classmethod
    def of(cls, model: ModelConfig, batch_size: int) -> ComputeLedger:
        m = model
        n = non_embedding_params(m.d_model, m.n_layers)
        return cls(n_params=n + embedding_params(m.d_model, m.vocab_size, m.context_length),
                   n_params_non_embedding=n,
                   flops_per_token=flops_per_token(m.d_model, m.n_layers, m.vocab_size, m.context_length),
                   tokens_per_step=batch_size * m.context_length)

    def at(self, step: int, wall_s: float, device_s: float) -> dict[str, float]:
        """The metrics of an eval at `step`: cumulative training tokens and FLOPs, seconds so far, the sizes.

        wall_s: seconds of the run so far (training, evaluation, sampling); device_s: seconds inside training
        steps on the run's one device (a GPU, or the CPU threads it was given)."""
        tokens = step * self.tokens_per_step
        return {"tokens": float(tokens), "flops": tokens * self.flops_per_token, "wall_s": wall_s,
                "device_s": device_s, "n_params": float(self.n_params),
                "n_params_non_embedding": float(self.n_params_non_embedding)}

