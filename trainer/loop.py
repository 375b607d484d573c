"""The pre-training loop: AdamW groups, warmup + cosine, autocast, clipping, periodic eval with samples.

    python -m trainer --preset smoke --data corpus.txt --tokenizer bpe:512 --out /tmp/run

Plain PyTorch, no Ray: `Pretrainer.run(on_eval=..., on_progress=...)` calls back at every eval with the metrics
(train_loss, val_loss, val_ppl, val_bpb, val_acc, lr, tokens_per_s, eval_s, and the compute ledger's tokens, flops,
wall_s, device_s, n_params, n_params_non_embedding: trainer/compute.py), and between evals with cheap progress, so
the Ray trainable can forward them to Tune; `state_dict()` / `load_state_dict()` carry everything a resumed run
needs to continue bit-for-bit on CPU, as tensors and plain data only (a checkpoint loads with `weights_only=True`,
to the CPU); `load_state_dict` moves each part to where this run keeps it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from trainer.compute import ComputeLedger
from trainer.config import ConfigError, OptimConfig, RunConfig, TrainConfig
from trainer.data import ChunkBatcher, Corpus, val_batches
from trainer.model import GPT
from trainer.result_schema import DIVERGED_LOSS, DIVERGED_PPL, perplexity
from trainer.rng import rng_state, set_rng_state
from trainer.mup import is_hidden_matrix, weight_decay_scale, width_mult
from trainer.precision import autocast_context, resolve_precision, warn_if_emulated
from trainer.tokenizer import TextTokenizer

SAMPLE_PROMPTS = ("The", "In 1998 , the", "Once upon a time")
# Validation batches have this many rows whatever train.batch_size is, so the trials of a sweep that searches the
# batch size are all scored on the same eval_batches × EVAL_ROWS validation windows (the seed's batch size).
EVAL_ROWS = 16


def lr_at(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Linear warmup to optim.lr over warmup_steps (step 0 already gets lr/warmup), then cosine to
    optim.lr × optim.min_lr_ratio."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    progress = min(1.0, (step - optim.warmup_steps) / max(1, max_steps - optim.warmup_steps))
    min_lr = optim.lr * optim.min_lr_ratio
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (optim.lr - min_lr)


def make_optimizer(model: GPT, optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW decaying the matrices (attention, MLP, the tied token embedding/output layer) but not biases,
    LayerNorms or the position table: those are offsets and scales, and shrinking them towards 0 only hurts.

    Each group's `lr_scale` multiplies the schedule's lr in train_step: 1 everywhere under SP; under μP the
    hidden matrices get their own group at 1/width_mult, with weight_decay × width_mult (trainer/mup.py)."""
    decay, no_decay, hidden = [], [], []
    mup = model.cfg.parametrization == "mup"
    for name, p in model.named_parameters():
        if mup and is_hidden_matrix(name, p.dim()):
            hidden.append(p)
        else:
            (decay if p.dim() >= 2 and not name.startswith("pos_emb") else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": optim.weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    if mup:
        groups.append({"params": hidden, "weight_decay": optim.weight_decay * weight_decay_scale(model.cfg),
                       "lr_scale": 1.0 / width_mult(model.cfg)})
    # The fused kernel does the whole update in one pass over each tensor, on GPU and on CPU (4x faster than
    # the multi-tensor foreach path on CPU: ~17 vs ~74 ms per seed-config step with one thread).
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), fused=fused, foreach=not fused)


def use_threads(train: TrainConfig) -> None:
    """The run's torch thread rule: train.threads intra-op threads (a sweep sets one per reserved core, so that
    concurrent trials, and the driver beside them, do not fight over the cores); 0 keeps torch's default."""
    if train.threads > 0:
        torch.set_num_threads(train.threads)


def resolve_device(train: TrainConfig) -> torch.device:
    if train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(train.device)


@dataclass
class EvalRecord:
    metrics: dict[str, float]
    samples: list[str] = field(default_factory=list)


class Pretrainer:
    """One pre-training run over a packed corpus. Build it, optionally load a checkpoint, then `run()`."""

    def __init__(self, cfg: RunConfig, corpus: Corpus, tokenizer: TextTokenizer):
        if cfg.model.vocab_size != corpus.vocab_size:
            raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} but the corpus was tokenized into "
                              f"{corpus.vocab_size} ids; build the config with trainer.config.with_vocab_size")
        self.cfg, self.corpus, self.tokenizer = cfg, corpus, tokenizer
        use_threads(cfg.train)
        torch.manual_seed(cfg.train.seed)
        self.device = resolve_device(cfg.train)
        warn_if_emulated(cfg.train.precision, self.device)
        self.autocast_dtype = resolve_precision(cfg.train.precision, self.device)
        self.model = GPT(cfg.model).to(self.device)
        self.optimizer = make_optimizer(self.model, cfg.optim, self.device)
        # A loss scale is needed only for fp16, whose range underflows small gradients; bf16 has fp32's range.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        self.batcher = ChunkBatcher(corpus.train, cfg.model.context_length, cfg.train.batch_size, cfg.train.seed)
        self.val = val_batches(corpus.val, cfg.model.context_length, EVAL_ROWS, cfg.train.eval_batches)
        # UTF-8 bytes of the text the evaluated targets stand for (EOS: none): val_bpb's denominator. Without a
        # tokenizer (benchmarks on bare token ids) there is no text, and no val_bpb.
        token_bytes = tokenizer.token_bytes() if tokenizer is not None else None
        self.val_bytes = int(sum(token_bytes[y.numpy()].sum() for _, y in self.val)) if tokenizer else 0
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.ledger = ComputeLedger.of(cfg.model, cfg.train.batch_size)

    def autocast(self):
        return autocast_context(self.device, self.autocast_dtype)

    # --- checkpoints -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "batcher": self.batcher.state_dict(), "step": self.step,
            "history": self.history, "rng": rng_state(),  # tensors and plain data: loads with weights_only=True
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.batcher.load_state_dict(state["batcher"])
        self.step, self.history = state["step"], list(state["history"])
        set_rng_state(state["rng"])

    # --- training ----------------------------------------------------------------------------------------
    def train_step(self) -> float:
        """One optimizer step; returns the (fp32) training loss."""
        self.model.train()
        lr = lr_at(self.step, self.cfg.optim, self.cfg.train.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        x, y = (t.to(self.device, non_blocking=True) for t in self.batcher.next_batch())
        with self.autocast():
            _, loss = self.model(x, y, return_logits=False)  # fused output layer + loss: no fp32 logits
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss, bits per byte (total NLL / (ln 2 × UTF-8 bytes of the evaluated targets), comparable across
        tokenizers) and next-token accuracy over the fixed validation batches."""
        self.model.eval()
        total_loss, correct, count = 0.0, 0, 0
        for x, y in self.val:
            x, y = x.to(self.device), y.to(self.device)
            with self.autocast():
                loss, hits = self.model.loss_and_hits(x, y)  # fused: no (tokens × vocab) logits
            total_loss += loss.item() * y.numel()
            correct += hits.sum().item()
            count += y.numel()
        val_loss = total_loss / count
        metrics = {"val_loss": val_loss, "val_ppl": perplexity(val_loss), "val_acc": correct / count}
        if self.val_bytes:
            metrics["val_bpb"] = total_loss / (math.log(2) * self.val_bytes)
        return metrics

    @torch.no_grad()
    def sample(self, max_new_tokens: int = 32) -> list[str]:
        """Completions of fixed prompts with a fixed seed, so samples from different evals are comparable."""
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed)
        texts = []
        for prompt in SAMPLE_PROMPTS:
            ids = torch.tensor([self.tokenizer.encode(prompt) or [self.corpus.eos_id]], device=self.device)
            with self.autocast():
                out = self.model.generate(ids, max_new_tokens, temperature=0.8, top_k=50, generator=generator)
            texts.append(self.tokenizer.decode(out[0].tolist()))
        return texts

    def _train_metrics(self, losses: list[float], train_time: float) -> dict[str, float]:
        """step, mean finite train_loss, lr and tokens_per_s over the steps whose losses are given."""
        finite = [v for v in losses if math.isfinite(v)]
        tokens = len(losses) * self.cfg.train.batch_size * self.cfg.model.context_length
        return {"step": self.step, "train_loss": sum(finite) / len(finite) if finite else DIVERGED_LOSS,
                "lr": lr_at(self.step - 1, self.cfg.optim, self.cfg.train.max_steps),
                "tokens_per_s": tokens / max(train_time, 1e-9)}

    def weights_finite(self) -> bool:
        """False once any parameter holds inf or NaN: a loss can stay finite for a while after that (the broken
        rows are not in the batch), but sampling from such a model raises."""
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def _eval_record(self, metrics: dict[str, float], diverged: bool) -> EvalRecord:
        eval_started = time.perf_counter()
        measured = {} if diverged or not self.weights_finite() else self.evaluate()
        if not math.isfinite(measured.get("val_loss", math.nan)):
            metrics.update(val_loss=DIVERGED_LOSS, val_ppl=DIVERGED_PPL, val_bpb=DIVERGED_LOSS, val_acc=0.0,
                           diverged=1.0)
            return EvalRecord(metrics)
        metrics.update(measured, diverged=0.0)
        record = EvalRecord(metrics, self.sample())
        # What measuring costs (the cpu preset's full validation split costs ~12 training steps):
        # shown so a sweep's overhead can be told apart from its evaluation.
        metrics["eval_s"] = time.perf_counter() - eval_started
        return record

    def run(self, on_eval: Callable[[EvalRecord], None] | None = None, progress: bool = False,
            on_progress: Callable[[dict[str, float]], None] | None = None,
            progress_every_s: float = 10.0) -> EvalRecord:
        """Train from self.step to train.max_steps, evaluating every train.eval_every steps and at the end.

        on_progress gets step, train_loss (mean over the steps since its last call), lr and tokens_per_s every
        progress_every_s seconds between evals, never at an eval step: cheap, no validation, for watching.
        A non-finite training loss ends the run at once with val_loss = DIVERGED_LOSS and `diverged` = 1, and so do
        weights or a validation loss found non-finite at an eval. A run loaded from a checkpoint of its end (saved
        but not yet taken by Tune when a crash or an interrupt hit) reports that end again instead of returning
        silently with an older result as the caller's last.
        """
        t = self.cfg.train
        last = self.history[-1] if self.history else None
        if last is not None and (last["step"] >= t.max_steps or last.get("diverged")):
            record = EvalRecord(dict(last))
            if on_eval is not None:
                on_eval(record)
            return record
        bar = None
        if progress:
            bar = tqdm(total=t.max_steps, initial=self.step, desc="pretrain", unit="step", dynamic_ncols=True)
        losses, train_time, since_progress, progress_at = [], 0.0, 0, time.perf_counter()
        # Seconds continue across a checkpoint restart: the ledger's totals are of the whole run.
        wall_s, device_s = (last.get("wall_s", 0.0), last.get("device_s", 0.0)) if last else (0.0, 0.0)
        wall_from = time.perf_counter()
        while self.step < t.max_steps:
            started = time.perf_counter()
            loss = self.train_step()
            train_time += time.perf_counter() - started
            losses.append(loss)
            since_progress += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            diverged = not math.isfinite(loss)
            if diverged or self.step % t.eval_every == 0 or self.step == t.max_steps:
                record = self._eval_record(self._train_metrics(losses, train_time), diverged)
                diverged = bool(record.metrics["diverged"])  # also: weights or validation loss went non-finite
                device_s += train_time
                record.metrics.update(self.ledger.at(self.step, wall_s + time.perf_counter() - wall_from, device_s))
                self.history.append(record.metrics)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.3f}", val_ppl=f"{record.metrics['val_ppl']:.1f}")
                if on_eval is not None:
                    on_eval(record)
                losses, train_time, since_progress, progress_at = [], 0.0, 0, time.perf_counter()
                if diverged:
                    break
            elif on_progress is not None and time.perf_counter() - progress_at >= progress_every_s:
                recent = self._train_metrics(losses[-since_progress:], train_time * since_progress / len(losses))
                on_progress(recent)
                since_progress, progress_at = 0, time.perf_counter()
        if bar is not None:
            bar.close()
        return record
