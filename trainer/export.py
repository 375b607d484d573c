"""Export a trained model as a Hugging Face GPT-2 folder (transformers' AutoModelForCausalLM and AutoTokenizer).

    python -m trainer.export runs/single/model --hf runs/single/hf
    python -m trainer.export models:/lr_warmup_best/1 --hf hf_model      (MLflow URIs as in trainer.generate)
    python -c "from transformers import pipeline; print(pipeline('text-generation', 'runs/single/hf')('The'))"

trainer.model.GPT is GPT-2's architecture (pre-LN blocks, learned positions, tied token embedding and output
layer, GELU-tanh, LayerNorm eps 1e-5, biases everywhere but the output layer), so the export is a renaming:
our nn.Linear weights are (out, in), GPT-2's Conv1D weights (in, out), hence the transposes; the fused qkv matrix
is laid out as GPT-2's c_attn (queries, keys, values; heads contiguous in each). The fused output layer used in
training computes the same logits as the plain one.

A μP model (model.parametrization=mup) exports exactly, its two multipliers folded into weights GPT2Config can
carry: GPT-2 scales attention logits by 1/sqrt(d_head) only (scale_attn_weights; scale_attn_by_inverse_layer_idx
divides by the layer index, not by d_head), so the query rows of c_attn (weights and bias) are multiplied by
μP's scale × sqrt(d_head); the readout multiplier 1/width_mult is folded into the final LayerNorm's weight and bias,
which feed only the output layer (the tied embedding itself cannot change: it is also the input lookup).
The export is checked before it is written: the logits of both models on a probe sequence agree within 1e-4.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils.logging import disable_progress_bar

from trainer.cli import ArgumentParser, exits_cleanly_on_bad_input
from trainer.config import ConfigError
from trainer.model_folder import SavedModel, load_model_folder
from trainer.model_uri import add_model_args, model_folder
from trainer.mup import attention_scale
from trainer.telemetry import disable_telemetry
from trainer.tokenizer import EOS

TOLERANCE = 1e-4  # largest |logit difference| accepted between our model and the export, in fp32


def hf_config(saved: SavedModel) -> GPT2Config:
    m, eos = saved.cfg.model, saved.tokenizer.eos_id
    return GPT2Config(vocab_size=m.vocab_size, n_positions=m.context_length, n_embd=m.d_model, n_layer=m.n_layers,
                      n_head=m.n_heads, activation_function="gelu_pytorch_tanh", resid_pdrop=m.dropout,
                      embd_pdrop=m.dropout, attn_pdrop=m.dropout, layer_norm_epsilon=1e-5,
                      scale_attn_weights=True, tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos,
                      pad_token_id=eos)


def hf_state_dict(saved: SavedModel) -> dict[str, torch.Tensor]:
    """Our parameters under GPT-2's names and layouts, μP's multipliers folded in (see the module docstring)."""
    model, m = saved.model, saved.cfg.model
    ours = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    # Under μP the ratio of its attention scale to GPT-2's 1/sqrt(d_head); SP's is GPT-2's.
    scale = attention_scale(m)
    query_factor = 1.0 if scale is None else scale * math.sqrt(m.d_model // m.n_heads)
    hf = {"transformer.wte.weight": ours["tok_emb.weight"], "transformer.wpe.weight": ours["pos_emb.weight"],
          "transformer.ln_f.weight": ours["ln_f.weight"] * model.readout_mult,
          "transformer.ln_f.bias": ours["ln_f.bias"] * model.readout_mult,
          "lm_head.weight": ours["tok_emb.weight"]}
    for i in range(m.n_layers):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        qkv_weight, qkv_bias = ours[src + "attn.qkv.weight"], ours[src + "attn.qkv.bias"]
        qkv_weight[:m.d_model] *= query_factor
        qkv_bias[:m.d_model] *= query_factor
        hf.update({dst + "ln_1.weight": ours[src + "ln_1.weight"], dst + "ln_1.bias": ours[src + "ln_1.bias"],
                   dst + "attn.c_attn.weight": qkv_weight.T.contiguous(), dst + "attn.c_attn.bias": qkv_bias,
                   dst + "attn.c_proj.weight": ours[src + "attn.proj.weight"].T.contiguous(),
                   dst + "attn.c_proj.bias": ours[src + "attn.proj.bias"],
                   dst + "ln_2.weight": ours[src + "ln_2.weight"], dst + "ln_2.bias": ours[src + "ln_2.bias"],
                   dst + "mlp.c_fc.weight": ours[src + "mlp.fc.weight"].T.contiguous(),
                   dst + "mlp.c_fc.bias": ours[src + "mlp.fc.bias"],
                   dst + "mlp.c_proj.weight": ours[src + "mlp.proj.weight"].T.contiguous(),
                   dst + "mlp.c_proj.bias": ours[src + "mlp.proj.bias"]})
    return hf


def to_hf(saved: SavedModel) -> GPT2LMHeadModel:
    """The GPT-2 model with our weights, in eval mode, checked against ours on a probe sequence."""
    hf = GPT2LMHeadModel(hf_config(saved))
    hf.load_state_dict(hf_state_dict(saved), strict=True)
    hf.eval()
    probe = torch.arange(saved.cfg.model.context_length)[None] % saved.cfg.model.vocab_size
    with torch.no_grad():
        gap = (hf(probe, attention_mask=torch.ones_like(probe)).logits - saved.model(probe)[0]).abs().max().item()
    if not gap <= TOLERANCE:
        raise ConfigError(f"the exported GPT-2's logits differ from the model's by {gap:.2g} (> {TOLERANCE}); "
                          "this model cannot be exported exactly, and nothing was written")
    return hf


def hf_tokenizer(saved: SavedModel) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(saved.tokenizer.to_json()), eos_token=EOS,
                                   bos_token=EOS, unk_token=EOS, pad_token=EOS,
                                   model_max_length=saved.cfg.model.context_length)


def export(saved: SavedModel, out: Path) -> Path:
    """Write the Hugging Face folder by way of OUT.partial and a rename: nothing half-written at OUT."""
    hf = to_hf(saved)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    disable_progress_bar()  # the command prints one line
    hf.save_pretrained(partial)  # model.safetensors, config.json, generation_config.json
    hf_tokenizer(saved).save_pretrained(partial)
    os.replace(partial, out)
    return out


@exits_cleanly_on_bad_input
def main(argv: list[str] | None = None) -> int:
    disable_telemetry()
    parser = ArgumentParser(prog="python -m trainer.export", description=__doc__.split("\n")[0])
    add_model_args(parser)
    parser.add_argument("--hf", required=True, metavar="OUT", help="the Hugging Face folder to write (new)")
    args = parser.parse_args(argv)
    out = Path(args.hf).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--hf {out} exists and is not an empty folder; name a new folder, or remove that one")
    with model_folder(args.model, args.mlflow_uri) as folder:
        saved = load_model_folder(folder)
    if out.exists():
        out.rmdir()  # empty: replaced by the finished folder
    print(f"wrote {export(saved, out)} (load it with transformers.AutoModelForCausalLM.from_pretrained)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
