"""Continue a prompt with a trained model; prints only the text (the prompt and its continuation) on stdout.

    python -m trainer.generate runs/single/model --prompt "The history of" --max-new-tokens 40 --seed 0
    python -m trainer.generate runs:/RUN_ID/model --mlflow-uri sqlite:////abs/path/mlflow.db --prompt "The" --greedy
    python -m trainer.generate models:/lr_warmup_best/1 --prompt "Once upon a time" --top-p 0.9

MODEL: a model folder (trainer/model_folder.py) or an MLflow URI of one (trainer/model_uri.py). Sampling is
trainer.model.GPT.generate's, the one the training loop's samples use: temperature, then top-k and/or nucleus
(top-p) filtering; --greedy takes the most likely token each time. The continuation ends at the end-of-text token
(where the training documents ended) or after --max-new-tokens. On the CPU, in fp32.
"""
from __future__ import annotations

import argparse
import sys

import torch

from trainer.cli import ArgumentParser, exits_cleanly_on_bad_input
from trainer.config import ConfigError
from trainer.model_folder import SavedModel, load_model_folder
from trainer.model_uri import add_model_args, model_folder
from trainer.telemetry import disable_telemetry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m trainer.generate", description=__doc__.split("\n")[0])
    add_model_args(parser)
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to add at most (default 64)")
    parser.add_argument("--temperature", type=float, default=0.8, help="> 0; lower is more conservative (0.8)")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens (50; 0: all)")
    parser.add_argument("--top-p", type=float, default=None, help="sample among the most likely tokens whose "
                        "probabilities add up to p (nucleus sampling; default: off)")
    parser.add_argument("--greedy", action="store_true", help="the most likely token each time (no sampling)")
    parser.add_argument("--seed", type=int, default=None, help="the same seed gives the same text (default: random)")
    args = parser.parse_args(argv)
    checks = [(args.max_new_tokens >= 1, f"--max-new-tokens {args.max_new_tokens} must be at least 1"),
              (args.temperature > 0, f"--temperature {args.temperature} must be > 0; for the most likely tokens "
                                     "use --greedy"),
              (args.top_k >= 0, f"--top-k {args.top_k} must be ≥ 0 (0: no top-k filter)"),
              (args.top_p is None or 0 < args.top_p <= 1, f"--top-p {args.top_p} must be in (0, 1]")]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return args


def prompt_ids(saved: SavedModel, prompt: str) -> list[int]:
    """The prompt's token ids (the end-of-text token for an empty prompt: a document's start); a ConfigError when
    they do not fit the model's context."""
    ids = saved.tokenizer.encode(prompt) or [saved.tokenizer.eos_id]
    context = saved.cfg.model.context_length
    if len(ids) > context:
        raise ConfigError(f"the prompt is {len(ids)} tokens but the model's context is {context}; give a prompt of "
                          f"at most {context} tokens")
    return ids


def continue_text(saved: SavedModel, prompt: str, max_new_tokens: int, temperature: float = 0.8,
                  top_k: int | None = 50, top_p: float | None = None, seed: int | None = None) -> str:
    """The prompt and its continuation (temperature 0: greedy), cut at the first end-of-text token."""
    ids = prompt_ids(saved, prompt)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    out = saved.model.generate(torch.tensor([ids]), max_new_tokens, temperature=temperature, top_k=top_k or None,
                               top_p=top_p, generator=generator)[0, len(ids):].tolist()
    if saved.tokenizer.eos_id in out:
        out = out[:out.index(saved.tokenizer.eos_id)]
    start = ids if prompt else []  # an empty prompt began at the end-of-text token, which is no text
    return saved.tokenizer.decode(start + out)


@exits_cleanly_on_bad_input
def main(argv: list[str] | None = None) -> int:
    disable_telemetry()
    args = parse_args(argv)
    with model_folder(args.model, args.mlflow_uri) as folder:
        saved = load_model_folder(folder)
    text = continue_text(saved, args.prompt, args.max_new_tokens, 0.0 if args.greedy else args.temperature,
                         args.top_k, args.top_p, args.seed)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
