"""python -m benchmarks.throughput [--preset seed] [--steps 24] [--rounds 12] [--threads 2] [--precision auto] [--plain] [--json]

Training tokens/s of our GPT + loop (the real `Pretrainer.train_step`) against `transformers.GPT2LMHeadModel`
built with the same config (vocabulary, layers, width, heads, context, dropout, tied embeddings, GELU-tanh,
LayerNorm eps) and started from the SAME weights, fed the same batches, with the same AdamW (groups, lr
schedule, betas, fused/foreach flag), autocast precision (`--precision`, default `auto`: what the loop picks on
this machine, bf16 only where the CPU/GPU does it natively), gradient clipping and threads. The two alternate in
rounds (ours, HF, ours, HF, ...) so that a noisy shared machine slows both alike; every speed is reported as
the median over rounds of the paired ratio. Before each round a large matmul in the run's dtype measures this machine's
peak, so `peak_fraction` (achieved model FLOP/s over peak) pairs each round with its own peak.

FLOPs per token: trainer/compute.py's (6·N + 12·L·T·d, the PaLM/nanoGPT convention: N = the weights of every
matmul, the tied output layer included, embedding lookups excluded; attention over the full context T).
Loss parity: both models' mean training loss over the last round and their validation loss at the end, on
wikitext-2 (GPTSWEEP_DATA_DIR, GPT-2 tokenizer) when present, else on random tokens. `--plain` adds a third
runner: our model with the pre-fusion output layer (bf16 logits → fp32 cross-entropy), as "before".
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from benchmarks.common import emit
from trainer.config import DataConfig, build_config, with_vocab_size
from trainer.data import ChunkBatcher, Corpus, prepare_corpus
from trainer.loop import Pretrainer, lr_at
from trainer.model import GPT
from trainer.sources import local_copy


def load_corpus(context_length: int) -> tuple[Corpus, str]:
    """wikitext-2 (test split) with the GPT-2 tokenizer from the shared data folder, else random GPT-2 tokens."""
    wikitext, tokenizer = local_copy("wikitext-2"), local_copy("gpt2_tokenizer")
    text = wikitext / "wiki.test.raw" if wikitext else None
    if text is not None and text.is_file() and tokenizer is not None:
        corpus, _ = prepare_corpus(DataConfig(source=str(text), tokenizer=str(tokenizer)), context_length)
        return corpus, f"wikitext-2 wiki.test.raw, GPT-2 tokenizer ({len(corpus.train):,} training tokens)"
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50257, 400_000).astype(np.uint32)
    return Corpus(tokens[:360_000], tokens[360_000:], 50257, 50256, "random"), "random tokens (no shared data)"


def device_name(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = platform.processor() or "cpu"
    try:
        flags = Path("/proc/cpuinfo").read_text()
        for line in flags.splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        isa = "amx_bf16" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "no bf16 ISA"
    except OSError:
        isa = "?"
    return f"cpu: {model}, {threads} threads, {isa}, torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak(device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int = 2048,
                 repeats: int = 3) -> float:
    """Best of `repeats` n×n×n matmuls in `dtype` (same threads), in TFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best / 1e12


# --- the Hugging Face peer --------------------------------------------------------------------------------
def hf_model_like(ours: GPT, attn: str = "sdpa"):
    """GPT2LMHeadModel with our config and a copy of our weights (Conv1D stores weights transposed)."""
    transformers.logging.set_verbosity_error()  # not "loss_type=None ... using the default loss"

    c = ours.cfg
    config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.d_model,
                        n_layer=c.n_layers, n_head=c.n_heads, resid_pdrop=c.dropout, embd_pdrop=c.dropout,
                        attn_pdrop=c.dropout, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                        tie_word_embeddings=True, use_cache=False, bos_token_id=c.vocab_size - 1,
                        eos_token_id=c.vocab_size - 1)
    config._attn_implementation = attn
    hf = GPT2LMHeadModel(config)
    ours_sd = ours.state_dict()
    mapped = {"transformer.wte.weight": ours_sd["tok_emb.weight"], "transformer.wpe.weight": ours_sd["pos_emb.weight"],
              "transformer.ln_f.weight": ours_sd["ln_f.weight"], "transformer.ln_f.bias": ours_sd["ln_f.bias"]}
    for i in range(c.n_layers):
        for hf_name, our_name, transpose in (("ln_1", "ln_1", False), ("ln_2", "ln_2", False),
                                             ("attn.c_attn", "attn.qkv", True), ("attn.c_proj", "attn.proj", True),
                                             ("mlp.c_fc", "mlp.fc", True), ("mlp.c_proj", "mlp.proj", True)):
            w = ours_sd[f"blocks.{i}.{our_name}.weight"]
            mapped[f"transformer.h.{i}.{hf_name}.weight"] = w.t().contiguous() if transpose else w
            mapped[f"transformer.h.{i}.{hf_name}.bias"] = ours_sd[f"blocks.{i}.{our_name}.bias"]
    missing, unexpected = hf.load_state_dict(mapped, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"weight mapping is off: missing {missing}, unexpected {unexpected}")
    if hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr():
        raise RuntimeError("HF model did not tie lm_head to wte")
    return hf


class HFPeer:
    """The same training step as Pretrainer.train_step, around GPT2LMHeadModel and its own loss."""

    def __init__(self, trainer: Pretrainer, attn: str = "sdpa"):
        self.cfg, self.device, self.step = trainer.cfg, trainer.device, 0
        self.model = hf_model_like(trainer.model, attn).to(self.device)
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():  # make_optimizer's rule: matrices decay, wpe does not
            (decay if p.dim() >= 2 and not name.endswith("wpe.weight") else no_decay).append(p)
        flags = {k: trainer.optimizer.defaults[k] for k in ("fused", "foreach")}
        o = self.cfg.optim
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=o.lr, betas=tuple(o.betas), **flags)
        t = self.cfg.train
        self.batcher = ChunkBatcher(trainer.corpus.train, self.cfg.model.context_length, t.batch_size, t.seed)
        self.autocast = trainer.autocast

    def train_step(self) -> float:
        self.model.train()
        lr = lr_at(self.step, self.cfg.optim, self.cfg.train.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = (t.to(self.device).contiguous() for t in self.batcher.next_batch())
        with self.autocast():
            loss = self.model(input_ids=x, labels=y, shift_labels=y).loss  # y is already shifted
        loss.backward()
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def evaluate(self, batches) -> float:
        self.model.eval()
        total, count = 0.0, 0
        for x, y in batches:
            with self.autocast():
                x, y = x.to(self.device), y.to(self.device).contiguous()
                loss = self.model(input_ids=x, labels=y, shift_labels=y).loss
            total, count = total + loss.item() * y.numel(), count + y.numel()
        return total / count


def plain_pretrainer(cfg, corpus) -> Pretrainer:
    """Our loop and model, but the output layer + loss of before the fusion (bf16 logits, fp32 cross-entropy)."""
    trainer = Pretrainer(cfg, corpus, tokenizer=None)
    model = trainer.model
    model.forward = lambda ids, targets=None, return_logits=True: GPT.forward(model, ids, targets, True)
    return trainer


# --- the run ------------------------------------------------------------------------------------------------
def timed_steps(runner, steps: int, device: torch.device) -> tuple[float, list[float]]:
    sync(device)
    started = time.perf_counter()
    losses = [runner.train_step() for _ in range(steps)]
    sync(device)
    return time.perf_counter() - started, losses


def alternate(runners: dict, rounds: int, per_round: int, device: torch.device, log) -> tuple[dict, dict, list]:
    """Each runner in turn, `rounds` times, with this machine's matmul peak (in the run's precision) measured
    before every round."""
    times = {name: [] for name in runners}
    losses = {name: [] for name in runners}
    peaks = []
    for r in range(rounds):
        peaks.append(measure_peak(device, runners["ours"].autocast_dtype or torch.float32))
        for name, runner in runners.items():
            elapsed, round_losses = timed_steps(runner, per_round, device)
            times[name].append(elapsed)
            losses[name] = round_losses
        log(f"round {r + 1}/{rounds}: peak {peaks[-1]:.3f} TFLOP/s, " + ", ".join(
            f"{n}: {per_round / times[n][-1]:.2f} steps/s" for n in runners))
    return times, losses, peaks


def summarize(runners: dict, tps: dict, losses: dict, peaks: list, fpt: float) -> dict:
    """Medians over rounds: ours against HF's faster attention in this run (the strongest honest peer)."""
    best_hf = max((n for n in runners if n.startswith("hf_")), key=lambda n: statistics.median(tps[n]))
    ratios = [a / b for a, b in zip(tps["ours"], tps[best_hf])]
    result = {
        "tokens_per_s": round(statistics.median(tps["ours"]), 1),
        "hf_tokens_per_s": round(statistics.median(tps[best_hf]), 1), "hf_attention": best_hf[3:],
        "ratio_vs_hf": round(statistics.median(ratios), 3), "ratio_vs_hf_per_round": [round(r, 3) for r in ratios],
        **{f"{n}_tokens_per_s": round(statistics.median(tps[n]), 1) for n in runners if n.startswith("hf_")},
        "peak_tflops": round(statistics.median(peaks), 4), "peak_tflops_per_round": [round(p, 4) for p in peaks],
        "flops_per_token": fpt, "achieved_tflops": round(statistics.median(tps["ours"]) * fpt / 1e12, 4),
        "peak_fraction": round(statistics.median([t * fpt / 1e12 / p for t, p in zip(tps["ours"], peaks)]), 3),
        "hf_peak_fraction": round(statistics.median([t * fpt / 1e12 / p for t, p in zip(tps[best_hf], peaks)]), 3),
        "loss": round(statistics.fmean(losses["ours"]), 4), "hf_loss": round(statistics.fmean(losses[best_hf]), 4),
        "loss_round_std": round(statistics.pstdev(losses["ours"] + losses[best_hf]), 4),
        "val_loss": round(runners["ours"].evaluate()["val_loss"], 4),
        "hf_val_loss": round(runners[best_hf].evaluate(runners["ours"].val), 4),  # the same validation batches
    }
    if "plain" in runners:
        result["plain_tokens_per_s"] = round(statistics.median(tps["plain"]), 1)
        result["ratio_vs_plain"] = round(statistics.median([a / b for a, b in zip(tps["ours"], tps["plain"])]), 3)
        result["plain_loss"] = round(statistics.fmean(losses["plain"]), 4)
    return result


def measure(preset: str = "seed", steps: int = 24, rounds: int = 12, warmup: int = 2, threads: int = 2,
            precision: str = "auto", plain: bool = False, hf_attn: str = "both", log=lambda *a: None) -> dict:
    """Tokens/s of our loop and its peers over alternating rounds, with loss parity."""
    per_round = max(1, steps // rounds)
    total = warmup + per_round * rounds
    # The preset's model and batch; a short warmup + cosine over the benchmark's own steps so that the loss
    # actually moves and loss parity means something (the schedule does not change the speed).
    cfg = build_config(preset, {"train.precision": precision, "train.threads": threads,
                                "train.max_steps": total, "optim.warmup_steps": max(1, total // 10)})
    torch.set_num_threads(threads)
    corpus, data_note = load_corpus(cfg.model.context_length)
    cfg = with_vocab_size(cfg, corpus.vocab_size)
    ours = Pretrainer(cfg, corpus, tokenizer=None)
    attns = ("sdpa", "eager") if hf_attn == "both" else (hf_attn,)
    runners = {"ours": ours, **{f"hf_{a}": HFPeer(ours, a) for a in attns}}
    if plain:
        runners["plain"] = plain_pretrainer(cfg, corpus)
    device, tokens_per_step = ours.device, cfg.train.batch_size * cfg.model.context_length
    fpt = ours.ledger.flops_per_token
    log(f"{preset}: {ours.model.num_parameters():,} parameters, {fpt / 1e6:.1f} MFLOP/token, {data_note}")
    for runner in runners.values():
        timed_steps(runner, warmup, device)
    times, losses, peaks = alternate(runners, rounds, per_round, device, log)
    tps = {n: [per_round * tokens_per_step / t for t in ts] for n, ts in times.items()}
    return {"preset": preset, "device": device_name(device, threads), "data": data_note,
            "precision": f"{precision}: " + (f"{str(ours.autocast_dtype).removeprefix('torch.')} autocast"
                                             if ours.autocast_dtype else "fp32"),
            "tokens_per_step": tokens_per_step, "steps_per_model": per_round * rounds, "rounds": rounds,
            **summarize(runners, tps, losses, peaks, fpt)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput")
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--steps", type=int, default=24, help="timed training steps per model (split into rounds)")
    parser.add_argument("--rounds", type=int, default=12, help="alternations of ours/HF")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                        help="autocast, as train.precision (default: what the loop picks on this machine)")
    parser.add_argument("--plain", action="store_true", help="also time our pre-fusion output layer")
    parser.add_argument("--hf-attn", default="both", choices=("both", "sdpa", "eager"),
                        help="the HF model's attention implementation(s); with both, the faster one is the peer")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    return emit(measure(args.preset, args.steps, args.rounds, args.warmup, args.threads, args.precision,
                        args.plain, args.hf_attn, log), args.json)


if __name__ == "__main__":
    main()
