"""Run configuration: dataclasses, presets and `--set section.field=value` overrides.

    python -m trainer --preset cpu --set optim.lr=1e-3 --set model.n_layers=2 ...

The dotted names (`optim.lr`, `train.max_steps`, ...) are the public interface: the same keys are the CLI
overrides, the MLflow parameter names and the Ray Tune search-space keys.
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

PARAMETRIZATIONS = ("sp", "mup")  # trainer/mup.py


class ConfigError(ValueError):
    """Bad user input. The message is one line naming the problem and the fix; CLIs exit with code 2."""


@dataclass
class DataConfig:
    source: str = "wikitext-2"  # hub name (wikitext-2, tinystories) or a local file/folder
    val_source: str | None = None  # None: hold out val_fraction of the documents
    tokenizer: str = "gpt2"  # gpt2, a local tokenizer folder/tokenizer.json, or bpe:N
    finetune_train: str | None = None  # ag_news or a local CSV/JSONL/parquet; None skips fine-tuning
    finetune_test: str | None = None
    val_fraction: float = 0.1


@dataclass
class ModelConfig:
    n_layers: int = 4
    n_heads: int = 8
    d_model: int = 256
    context_length: int = 128
    dropout: float = 0.1
    vocab_size: int = 50257  # the tokenizer's size: with_vocab_size() sets it once the tokenizer is loaded
    parametrization: str = "sp"  # sp (GPT-2's) or mup: μP, whose optimal lr transfers across width (trainer/mup.py)
    base_width: int = 256  # under mup: the d_model at which μP equals sp (where the lr was tuned); sp ignores it


@dataclass
class OptimConfig:
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # the cosine ends at lr × this (nanoGPT's lr/10), whatever lr a sweep samples
    warmup_steps: int = 200
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # global-norm clip; 0 disables it


@dataclass
class TrainConfig:
    batch_size: int = 16
    max_steps: int = 2000
    eval_every: int = 200
    eval_batches: int = 20  # validation batches of trainer.loop.EVAL_ROWS windows each, whatever batch_size is
    precision: str = "auto"  # auto (bf16 where native, else fp16 on a GPU with fp16 tensor cores, else fp32), bf16, fp16, fp32
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    threads: int = 0  # torch intra-op threads on CPU; 0 leaves torch's default
    save_model: bool = True  # write the final model folder (trainer/model_folder.py); false skips it


@dataclass
class FinetuneConfig:
    lr: float = 1e-4
    epochs: float = 2  # at least this many passes over the training rows...
    steps: int = 200  # ...and at least this many optimizer steps, whatever the table's size (trainer/finetune.py)
    probe_steps: int = 0  # first train the head alone on the frozen body's features for this many steps
    batch_size: int = 32
    max_length: int = 128
    fewshot_n: int = 100
    pooling: str = "last"  # the head reads the last real token's state (the seed's), or the mean over all of them


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


# Presets are overrides of the defaults above (which are the seed's config). Sweeps add their own budget keys.
PRESETS: dict[str, dict[str, object]] = {
    # The seed's config exactly: a GPU job (2000 steps of 16x128 tokens, GPT-2 vocabulary).
    "seed": {},
    # Minutes per trial on one core of a 2-core CPU in fp32, chosen by measurement (docs/results.md, "The cpu
    # preset"): a corpus BPE (GPT-2's output layer was ~94 % of the work), half the seed's batch, no dropout, 1,800
    # steps (where the local WikiText-2 split stops paying: 4.2 % below its bigram); a 200-step probe, then 300+
    # fine-tuning updates at 2e-3 on mean-pooled states.
    "cpu": {
        "data.tokenizer": "bpe:4096",
        "model.n_layers": 2,
        "model.n_heads": 4,
        "model.d_model": 128,
        "model.context_length": 128,
        "model.dropout": 0.0,
        "optim.lr": 3e-3,
        "optim.warmup_steps": 180,
        "train.batch_size": 8,
        "train.max_steps": 1800,
        "train.eval_every": 450,
        "train.eval_batches": 40,
        "finetune.lr": 2e-3,
        "finetune.epochs": 2,
        "finetune.steps": 300,
        "finetune.probe_steps": 200,
        "finetune.max_length": 64,
        "finetune.pooling": "mean",
    },
    # Seconds, for tests: a toy model on whatever small corpus the test provides.
    "smoke": {
        "model.n_layers": 1,
        "model.n_heads": 2,
        "model.d_model": 32,
        "model.context_length": 16,
        "model.dropout": 0.0,
        "optim.lr": 3e-3,
        "optim.warmup_steps": 2,
        "train.batch_size": 4,
        "train.max_steps": 12,
        "train.eval_every": 4,
        "train.eval_batches": 2,
        "finetune.epochs": 1,
        "finetune.steps": 2,
        "finetune.batch_size": 8,
        "finetune.max_length": 16,
        "finetune.fewshot_n": 8,
    },
}


def gpu_count() -> int:
    """torch.cuda.device_count(), without importing torch (seconds, before any input is checked) on a Linux
    machine with no NVIDIA or ROCm driver."""
    # /dev/nvidiactl too: a sandbox (gVisor, some containers) may pass the device nodes without /proc/driver/nvidia.
    driver = ("/proc/driver/nvidia/gpus", "/dev/nvidiactl", "/dev/kfd")
    if sys.platform == "linux" and not any(Path(p).exists() for p in driver):
        return 0
    import torch

    return torch.cuda.device_count()


def default_preset() -> str:
    """`seed` where a GPU is present, `cpu` otherwise."""
    return "seed" if gpu_count() else "cpu"


def flatten(cfg: RunConfig) -> dict[str, object]:
    """{'optim.lr': 3e-4, ...} for every field: MLflow params, config.json, Tune keys."""
    return {f"{s}.{k}": v for s, section in dataclasses.asdict(cfg).items() for k, v in section.items()}


def _coerce(key: str, raw: object, annotation: str) -> object:
    """Turn a CLI string (or a Tune sample) into the field's declared type, or raise a ConfigError."""
    hint = "a float" if "float" in annotation else "an integer" if annotation.startswith("int") else "a value"
    if isinstance(raw, str):
        text = raw.strip()
        if "None" in annotation and text.lower() in ("none", "null", ""):
            return None
        try:
            if annotation.startswith("tuple"):
                return tuple(float(x) for x in text.strip("()[] ").split(","))
            if annotation.startswith("bool"):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return text.lower() in ("true", "1")
            if annotation.startswith("int"):
                return int(float(text)) if float(text).is_integer() else int(text)
            if annotation.startswith("float"):
                return float(text)
            return text
        except ValueError:
            raise ConfigError(f"--set {key}={raw}: expected {hint}; give e.g. --set {key}=" +
                              ("1e-3" if "float" in annotation else "4")) from None
    if annotation.startswith("int") and isinstance(raw, float) and raw.is_integer():
        return int(raw)  # Tune's quantized samplers hand integers back as floats
    if annotation.startswith("float") and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if annotation.startswith("tuple") and isinstance(raw, list):
        return tuple(raw)
    return raw


def set_value(cfg: RunConfig, key: str, value: object) -> None:
    """Set one dotted field with type coercion; unknown names raise a ConfigError listing the valid ones."""
    section_name, _, name = key.partition(".")
    section = getattr(cfg, section_name, None) if section_name in RunConfig.__dataclass_fields__ else None
    if section is None or name not in type(section).__dataclass_fields__:
        sections = ", ".join(RunConfig.__dataclass_fields__)
        known = (", ".join(type(section).__dataclass_fields__) if section is not None else f"sections: {sections}")
        raise ConfigError(f"unknown config field '{key}'; valid names in that section: {known}")
    annotation = str(type(section).__dataclass_fields__[name].type)
    setattr(section, name, _coerce(key, value, annotation))


def parse_overrides(pairs: typing.Iterable[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{pair}' is not of the form section.field=value; e.g. --set optim.lr=1e-3")
        overrides[key.strip()] = value
    return overrides


def build_config(preset: str, overrides: dict[str, object] | None = None) -> RunConfig:
    """Defaults, then the preset, then the overrides; validated."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    overrides = overrides or {}
    cfg = RunConfig()
    for key, value in {**PRESETS[preset], **overrides}.items():
        set_value(cfg, key, value)
    validate(cfg)
    return cfg


def spread_params(params: dict[str, object]) -> dict[str, object]:
    """`params` with each mapping value (a grid point that moves several fields: sweeps/scaling.py's model sizes)
    replaced by its dotted keys: what MLflow logs and analysis reads."""
    return {k: v for key, value in params.items()
            for k, v in (value.items() if isinstance(value, dict) else [(key, value)])}


def config_from_params(params: dict[str, object]) -> RunConfig:
    """The RunConfig a flat mapping (Tune's trial config, MLflow params; spread_params) describes, the inverse of
    `flatten`; keys it lacks keep the dataclass defaults (the seed's config)."""
    cfg = RunConfig()
    for key, value in spread_params(params).items():
        set_value(cfg, key, value)
    validate(cfg)
    return cfg


def with_vocab_size(cfg: RunConfig, vocab_size: int) -> RunConfig:
    """A copy of cfg whose model matches a loaded tokenizer's vocabulary."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab_size))


def validate(cfg: RunConfig) -> None:
    """Reject configurations that would fail or mislead later, with the fix in the message."""
    m, o, t, f = cfg.model, cfg.optim, cfg.train, cfg.finetune
    checks = [
        (min(m.n_layers, m.n_heads, m.d_model, m.context_length) > 0,
         f"model.n_layers={m.n_layers}, n_heads={m.n_heads}, d_model={m.d_model} and "
         f"context_length={m.context_length} must all be > 0"),
        (m.n_heads <= 0 or m.d_model % m.n_heads == 0,
         f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}; choose n_heads that divides "
         "d_model"),
        (0.0 <= m.dropout < 1.0, f"model.dropout={m.dropout} must be in [0, 1)"),
        (m.parametrization in PARAMETRIZATIONS,
         f"model.parametrization={m.parametrization!r}: use sp or mup, e.g. --set model.parametrization=mup"),
        (m.base_width > 0, f"model.base_width={m.base_width} must be > 0: the d_model where μP equals sp, e.g. 128"),
        (0 < o.lr < math.inf, f"optim.lr={o.lr} must be a finite number > 0; e.g. --set optim.lr=3e-4"),
        (0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio={o.min_lr_ratio} must be between 0 and 1 (a share of optim.lr)"),
        (0 <= o.warmup_steps <= t.max_steps,
         f"optim.warmup_steps={o.warmup_steps} must be between 0 and train.max_steps={t.max_steps}"),
        (o.weight_decay >= 0 and o.grad_clip >= 0, "optim.weight_decay and optim.grad_clip must be >= 0"),
        (len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), f"optim.betas={o.betas} must be two values in [0, 1)"),
        (t.batch_size > 0, f"train.batch_size={t.batch_size} must be > 0"),
        (t.max_steps > 0 and t.eval_every > 0 and t.eval_batches > 0,
         "train.max_steps, train.eval_every and train.eval_batches must be > 0"),
        (t.precision in ("auto", "bf16", "fp16", "fp32"), f"train.precision={t.precision!r}: use auto, bf16, fp16 or fp32"),
        (0.0 < cfg.data.val_fraction < 1.0, f"data.val_fraction={cfg.data.val_fraction} must be in (0, 1)"),
        (f.max_length <= m.context_length,
         f"finetune.max_length={f.max_length} exceeds model.context_length={m.context_length}; "
         "lower finetune.max_length"),
        (f.pooling in ("last", "mean"), f"finetune.pooling={f.pooling!r}: use last or mean"),
        (0 < f.lr < math.inf and f.batch_size > 0 and f.max_length > 1 and f.fewshot_n > 0,
         "finetune.lr (finite), batch_size, max_length and fewshot_n must be positive"),
        (0 <= f.epochs < math.inf and f.steps >= 0 and f.probe_steps >= 0 and (f.epochs > 0 or f.steps > 0),
         f"finetune.epochs={f.epochs}, steps={f.steps}, probe_steps={f.probe_steps}: each >= 0, epochs or steps > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    check_device(t.device)


def check_device(device: str) -> None:
    """train.device names auto, cpu, cuda or cuda:N, and a GPU this machine (this trial, under Ray) can see."""
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device not in ("auto", "cpu") and not match:
        raise ConfigError(f"train.device={device!r}: use auto, cpu, cuda or cuda:N")
    if match:
        index, count = int(match[1] or 0), gpu_count()
        if index >= count:
            raise ConfigError(f"train.device={device} but this machine has {count} CUDA GPU(s) visible; "
                              "use --set train.device=auto (or cpu)" + (f", or cuda:0 to cuda:{count - 1}" if count else ""))
