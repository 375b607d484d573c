"""pytest tests/trainer/test_generate_export.py — `python -m trainer.generate` and `python -m trainer.export` on a model folder.

Fast: smoke-sized models (every parameter random, so that a misplaced weight shows) and real transformers.
"""
from __future__ import annotations

import pickle

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.config import build_config, with_vocab_size
from trainer.export import main as export_main
from trainer.generate import continue_text
from trainer.generate import main as generate_main
from trainer.model import GPT
from trainer.model_folder import load_model_folder, save_model_folder
from trainer.tokenizer import load_tokenizer

PROMPTS = ("The old cat", "A quiet river near the town", "Every child found")


def random_model_folder(smoke_trainer, folder, **overrides):
    trainer = smoke_trainer(**{"model.context_length": 32, **overrides})
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.normal_(0.0, 0.2)
    return save_model_folder(folder, trainer.model, trainer.cfg, trainer.tokenizer)


@pytest.fixture
def model_dir(smoke_trainer, tmp_path):
    return random_model_folder(smoke_trainer, tmp_path / "model")


def generate(capsys, *args: str) -> tuple[int, str, str]:
    code = generate_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("parametrization", ["sp", "mup"])
def test_the_export_loads_in_transformers_with_our_logits_and_greedy_text(smoke_trainer, tmp_path, parametrization):
    # μP at twice its base width: its attention scale and readout multiplier differ from GPT-2's defaults
    folder = random_model_folder(smoke_trainer, tmp_path / "model", **{"model.parametrization": parametrization,
                                                                       "model.base_width": 16})
    assert export_main([str(folder), "--hf", str(tmp_path / "hf")]) == 0
    ours = load_model_folder(folder)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf.config.model_type == "gpt2"
    for prompt in PROMPTS:
        ids = hf_tokenizer(prompt, return_tensors="pt").input_ids
        assert ids[0].tolist() == ours.tokenizer.encode(prompt)
        with torch.no_grad():
            gap = (hf(ids).logits - ours.model(ids)[0]).abs().max().item()
        assert gap < 1e-4
        new = 12
        hf_out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False)
        continuation = hf_out[0, ids.shape[1]:].tolist()
        if hf_tokenizer.eos_token_id in continuation:  # both stop at the end-of-text token
            continuation = continuation[:continuation.index(hf_tokenizer.eos_token_id)]
        hf_text = hf_tokenizer.decode(ids[0].tolist() + continuation)
        assert continue_text(ours, prompt, new, temperature=0.0) == hf_text


def test_the_gpt2_tokenizer_exports_with_the_same_ids(shared_data, tmp_path):
    gpt2 = load_tokenizer("gpt2")
    cfg = with_vocab_size(build_config("smoke", {"data.tokenizer": "gpt2"}), gpt2.vocab_size)
    folder = save_model_folder(tmp_path / "model", GPT(cfg.model), cfg, gpt2)
    assert export_main([str(folder), "--hf", str(tmp_path / "hf")]) == 0
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in ("The history of Ünïcode", " a leading space", "one<|endoftext|>two", "In 1998 , the"):
        assert hf_tokenizer(text).input_ids == gpt2.encode(text) and hf_tokenizer.decode(gpt2.encode(text)) == text
    assert hf_tokenizer.eos_token_id == gpt2.eos_id


def test_the_export_refuses_an_occupied_folder_and_writes_nothing_for_a_bad_model(model_dir, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    assert export_main([str(model_dir), "--hf", str(tmp_path / "taken")]) == 2
    assert (tmp_path / "taken" / "file").read_text() == "mine"
    assert export_main([str(tmp_path / "nowhere"), "--hf", str(tmp_path / "hf")]) == 2
    assert not (tmp_path / "hf").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_generate_prints_the_prompt_and_a_continuation_and_nothing_else(model_dir, capsys):
    code, out, err = generate(capsys, str(model_dir), "--prompt", "The old cat", "--max-new-tokens", "8",
                              "--seed", "3")
    assert code == 0 and out.startswith("The old cat") and len(out.rstrip("\n")) > len("The old cat")
    assert out.count("\n") == 1 and out.endswith("\n")
    assert generate(capsys, str(model_dir), "--prompt", "The old cat", "--max-new-tokens", "8", "--seed", "3")[1] == out


def test_sampling_from_the_single_most_likely_token_is_greedy(model_dir, capsys):
    greedy = generate(capsys, str(model_dir), "--prompt", "A river", "--greedy", "--max-new-tokens", "10")[1]
    top1 = generate(capsys, str(model_dir), "--prompt", "A river", "--top-k", "1", "--seed", "7",
                    "--max-new-tokens", "10")[1]
    nucleus = generate(capsys, str(model_dir), "--prompt", "A river", "--top-p", "1e-6", "--top-k", "0",
                       "--seed", "8", "--max-new-tokens", "10")[1]
    assert greedy == top1 == nucleus


def test_the_continuation_ends_at_the_end_of_text_token(smoke_trainer, tmp_path, capsys):
    trainer = smoke_trainer(**{"model.context_length": 32})
    model, eos = trainer.model, trainer.tokenizer.eos_id
    with torch.no_grad():  # every position's final state is the end-of-text token's embedding: it always comes next
        model.tok_emb.weight[eos] = 0.0
        model.tok_emb.weight[eos, 0] = 50.0
        model.ln_f.weight.zero_()
        model.ln_f.bias.copy_(model.tok_emb.weight[eos])
    folder = save_model_folder(tmp_path / "model", model, trainer.cfg, trainer.tokenizer)
    assert generate(capsys, str(folder), "--prompt", "The old cat", "--seed", "0")[1] == "The old cat\n"


def _not_a_folder(model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    return [str(tmp_path / "empty"), "--prompt", "The"], "not a model folder"


def _missing_file(model_dir, tmp_path):
    (model_dir / "tokenizer.json").unlink()
    return [str(model_dir), "--prompt", "The"], "lacks tokenizer.json"


def _no_such_path(model_dir, tmp_path):
    return [str(tmp_path / "typo"), "--prompt", "The"], "does not exist"


def _pickled_weights(model_dir, tmp_path):
    (model_dir / "model.safetensors").write_bytes(pickle.dumps({"weights": [1.0]}))
    return [str(model_dir), "--prompt", "The"], "not a safetensors file"


def _a_hugging_face_folder(model_dir, tmp_path):
    assert export_main([str(model_dir), "--hf", str(tmp_path / "hf")]) == 0
    return [str(tmp_path / "hf"), "--prompt", "The"], "Hugging Face folder"


def _prompt_too_long(model_dir, tmp_path):
    return [str(model_dir), "--prompt", "the cat " * 40], "context is 32"


def _bad_temperature(model_dir, tmp_path):
    return [str(model_dir), "--prompt", "The", "--temperature", "0"], "use --greedy"


@pytest.mark.parametrize("case", [_not_a_folder, _missing_file, _no_such_path, _pickled_weights,
                                  _a_hugging_face_folder, _prompt_too_long, _bad_temperature])
def test_bad_input_exits_2_with_one_line(model_dir, tmp_path, capsys, case):
    argv, expected = case(model_dir, tmp_path)
    capsys.readouterr()
    code, out, err = generate(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and expected in err
