"""python -m benchmarks.gpu --json [--preset seed] [--steps 400] [--rounds 10] [--ks 1,2,4,8,16] [--no-compile]

The GPU path, measured on one GPU in one run (a few minutes; at most ~8 on an H100-class GPU):

1. Training tokens/s of the seed config through our loop (`Pretrainer.train_step`, `auto` precision: bf16 on a
   bf16-native GPU) and its MFU: achieved model FLOP/s (6·N + 12·L·T·d per token, trainer/compute.py's
   `flops_per_token`) over the GPU's dense bf16 peak from NVIDIA's datasheet (`PEAKS`: figure and source), and
   over a large bf16 matmul timed in the same run.
2. The output layer + loss on CUDA, at equal loss: `plain` (logits in bf16, then F.cross_entropy: our CUDA default,
   not yet measured before this benchmark), `fused` (trainer/fused_loss.py with its GPU-sized chunks), `compiled`
   (the plain path with the whole model under torch.compile), and the peer `hf` (transformers.GPT2LMHeadModel,
   benchmarks/throughput.py's HFPeer: same weights, batches, optimizer, autocast). All start from the same weights
   and batches and alternate in rounds; speeds are medians over rounds. `fastest_output_layer_at_equal_loss` is
   the fastest of ours whose validation loss is within 1 % of the default's.
3. k = 1, 2, 4, 8, 16 concurrent trials of the same config on the one GPU with real Ray fractional GPUs
   (benchmarks/gpu_packing.py), and the gpus_per_trial that follows.

Without CUDA it exits 2 with one line. `measure(device="cpu", ...)` runs the same code on CPU (tests only).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time

import torch

from benchmarks.gpu_packing import measure_packing
from benchmarks.throughput import HFPeer, device_name, load_corpus, measure_peak, timed_steps
from trainer.config import build_config, with_vocab_size
from trainer.loop import Pretrainer

# Dense bf16 tensor-core peaks, TFLOP/s: NVIDIA's datasheets quote twice these "with sparsity". First match wins.
PEAKS = (
    (r"H200 NVL", 835.5, "NVIDIA H200 datasheet: H200 NVL 1,671 TFLOP/s bf16 with sparsity, half of it dense"),
    (r"H200", 989.4, "NVIDIA H200 datasheet: H200 SXM 1,979 TFLOP/s bf16 with sparsity (the H100 SXM's), half dense"),
    (r"H100 NVL", 835.5, "NVIDIA H100 datasheet: H100 NVL 1,671 TFLOP/s bf16 with sparsity, half of it dense"),
    (r"H100 PCIe", 756.5, "NVIDIA H100 datasheet: H100 PCIe 1,513 TFLOP/s bf16 with sparsity, half of it dense"),
    (r"H100", 989.4, "NVIDIA H100 datasheet: H100 SXM 1,979 TFLOP/s bf16 with sparsity, half of it dense"),
    (r"A100", 312.0, "NVIDIA A100 datasheet: 312 TFLOP/s bf16 dense (624 with sparsity)"),
    (r"L40S", 362.05, "NVIDIA L40S datasheet: 362.05 TFLOP/s bf16 dense (733 with sparsity)"),
    (r"\bL4\b", 121.0, "NVIDIA L4 datasheet: 242 TFLOP/s bf16 with sparsity, half of it dense"),
    (r"\bA10\b", 125.0, "NVIDIA A10 datasheet: 125 TFLOP/s bf16 dense (250 with sparsity)"),
)
EQUAL_LOSS = 0.01  # relative validation-loss difference under which two output layers count as equal


def datasheet_peak(name: str) -> tuple[float | None, str]:
    for pattern, tflops, source in PEAKS:
        if re.search(pattern, name):
            return tflops, source
    return None, f"no datasheet figure for {name!r} in benchmarks/gpu.py PEAKS"


def make_runners(cfg, corpus, compile_model: bool) -> tuple[str, dict]:
    """The device's default output layer, and every runner, each from the same seed (same weights, batches)."""
    runners = {name: Pretrainer(with_vocab_size(cfg, corpus.vocab_size), corpus, tokenizer=None) for name in ("plain", "fused")}
    plain = runners["plain"]
    default = "fused" if plain.model.uses_fused_output(plain.device) else "plain"  # before forcing either
    for name in runners:
        runners[name].model.fused_output = name == "fused"
    runners["hf"] = HFPeer(runners["plain"], "sdpa")  # copies the weights now, before any step
    if compile_model:
        compiled = Pretrainer(with_vocab_size(cfg, corpus.vocab_size), corpus, tokenizer=None)
        compiled.model.fused_output = False
        compiled.model = torch.compile(compiled.model)
        runners["compiled"] = compiled
    return default, runners


def alternate(runners: dict, rounds: int, per_round: int, device, log) -> tuple[dict, dict]:
    """Tokens/s per round and the last round's losses, the runners taking turns within each round."""
    tps, losses = {n: [] for n in runners}, {}
    for r in range(rounds):
        for name, runner in runners.items():
            elapsed, losses[name] = timed_steps(runner, per_round, device)
            tps[name].append(per_round * runner.cfg.train.batch_size * runner.cfg.model.context_length / elapsed)
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:,.0f} tok/s" for n, v in tps.items()))
    return tps, losses


def warm_up(runners: dict, steps: int, device) -> dict[str, str]:
    """Untimed steps for each runner (torch.compile compiles here); one that fails is dropped and its error kept."""
    errors = {}
    for name in list(runners):
        try:
            timed_steps(runners[name], steps, device)
        except Exception as error:  # a compiler that fails on this machine loses its runner, not the benchmark
            errors[name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
            del runners[name]
    return errors


def speed_figures(default: str, median: dict, fpt: float, matmul_peak: float, device) -> dict:
    """Tokens/s of the device's default runner, its MFU against the datasheet peak and the measured matmul, vs HF."""
    peak, source = datasheet_peak(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    achieved = median[default] * fpt / 1e12
    return {
        "default_output_layer": default, "tokens_per_s": round(median[default], 1),
        "flops_per_token": fpt, "achieved_tflops": round(achieved, 3),
        "peak_tflops_datasheet": peak, "peak_source": source,
        "mfu": None if peak is None else round(achieved / peak, 4),
        "matmul_tflops_measured": round(matmul_peak, 2), "mfu_vs_measured_matmul": round(achieved / matmul_peak, 4),
        "hf_tokens_per_s": round(median["hf"], 1), "ratio_vs_hf": round(median[default] / median["hf"], 3),
        "hf_mfu": None if peak is None else round(median["hf"] * fpt / 1e12 / peak, 4),
    }


def output_layer_figures(runners: dict, default: str, median: dict, losses: dict) -> dict:
    """Each runner's speed and losses (validation on the same batches), and the fastest of ours at equal loss."""
    val = {n: (r.evaluate(runners["plain"].val) if n == "hf" else r.evaluate()["val_loss"])
           for n, r in runners.items()}
    equal = [n for n in runners if n != "hf" and abs(val[n] - val[default]) <= EQUAL_LOSS * val[default]]
    return {
        "output_layers": {n: {"tokens_per_s": round(median[n], 1), "ratio_vs_default": round(
            median[n] / median[default], 3), "train_loss": round(statistics.fmean(losses[n]), 4),
            "val_loss": round(val[n], 4)} for n in runners},
        "fastest_output_layer_at_equal_loss": max(equal, key=median.get),
    }


def measure(preset: str = "seed", steps: int = 400, rounds: int = 10, warmup: int = 3,
            ks: tuple[int, ...] = (1, 2, 4, 8, 16), pack_steps: int = 200, pack_warmup: int = 10,
            compile_model: bool = True, device: str = "cuda", log=lambda *a: None) -> dict:
    started = time.perf_counter()
    per_round = max(1, steps // rounds)
    total = warmup + per_round * rounds
    threads = {"train.threads": 1} if device == "cpu" else {}  # CPU: the tests only
    cfg = build_config(preset, {"train.device": device, "train.max_steps": total,
                                "optim.warmup_steps": max(1, total // 10), **threads})
    corpus, data_note = load_corpus(cfg.model.context_length)
    default, runners = make_runners(cfg, corpus, compile_model)
    dev = runners["plain"].device
    fpt = runners["plain"].ledger.flops_per_token
    errors = warm_up(runners, warmup, dev)
    matmul_peak = measure_peak(dev, n=8192 if dev.type == "cuda" else 1024, repeats=5)
    tps, losses = alternate(runners, rounds, per_round, dev, log)
    median = {n: statistics.median(v) for n, v in tps.items()}
    result = {"preset": preset, "device": device_name(dev, torch.get_num_threads()), "data": data_note,
              "precision": str(runners["plain"].autocast_dtype or "fp32"),
              "tokens_per_step": cfg.train.batch_size * cfg.model.context_length,
              "steps_per_runner": per_round * rounds, "rounds": rounds,
              **speed_figures(default, median, fpt, matmul_peak, dev),
              **output_layer_figures(runners, default, median, losses), "errors": errors}
    log(json.dumps({k: v for k, v in result.items() if k != "output_layers"}))
    del runners  # free the GPU for the packed trials
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    pack = {"train.device": "auto", "train.max_steps": pack_warmup + pack_steps,
            "optim.warmup_steps": max(1, (pack_warmup + pack_steps) // 10), **threads}
    try:
        result["packing"] = measure_packing(corpus, preset, pack, tuple(ks), pack_warmup, pack_steps)
    except Exception as error:  # e.g. Ray missing on a bare GPU machine: the figures above still come back
        result["packing"] = {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu")
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--steps", type=int, default=400, help="timed training steps per runner (split into rounds)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--ks", default="1,2,4,8,16", help="concurrent trials per GPU to try, ascending")
    parser.add_argument("--pack-steps", type=int, default=200, help="timed steps per packed trial")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile runner")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: benchmarks.gpu measures a CUDA GPU and torch sees none here (torch.cuda.is_available() is "
              "False); run it on a GPU machine, e.g. with benchmarks/gpu_session.sh", file=sys.stderr)
        return 2
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    result = measure(args.preset, args.steps, args.rounds, ks=tuple(int(k) for k in args.ks.split(",")),
                     pack_steps=args.pack_steps, compile_model=not args.no_compile, log=log)
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
