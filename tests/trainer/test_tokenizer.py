"""Tokenizers: a corpus-trained BPE, the GPT-2 tokenizer from a local folder, the hub failing fast offline.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 pytest tests/trainer/test_tokenizer.py -q
"""
from __future__ import annotations

import pickle

import pytest

from trainer.config import ConfigError
from trainer.sources import read_classification, read_documents
from trainer.tokenizer import load_tokenizer


# --- tokenizers ----------------------------------------------------------------------------------------------

def test_bpe_trains_deterministically_and_round_trips(tiny_documents):
    tokenizer = load_tokenizer("bpe:400", tiny_documents)
    assert tokenizer.vocab_size == 400 and tokenizer.decode([tokenizer.eos_id]) == "<|endoftext|>"
    text = "The quiet cat found a letter, again! Ünïcode too."
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode_batch([text, "a"]) == [tokenizer.encode(text), tokenizer.encode("a")]
    assert load_tokenizer("bpe:400", tiny_documents).to_json() == tokenizer.to_json()
    clone = pickle.loads(pickle.dumps(tokenizer))  # shipped to Ray workers
    assert clone.encode(text) == tokenizer.encode(text) and clone.spec == "bpe:400"


@pytest.mark.parametrize("spec, match", [("bpe:abc", "must be an integer"), ("bpe:10", "at least 257"),
                                         ("no/such/tokenizer", "not gpt2, bpe:N or an existing")])
def test_bad_tokenizer_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        load_tokenizer(spec, ["some text"])


def test_gpt2_from_the_local_folder(shared_data, tmp_path):
    folder = shared_data / "gpt2_tokenizer"
    pair = tmp_path / "pair"  # the original vocab.json + merges.txt, without tokenizer.json
    pair.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (pair / name).symlink_to(folder / name)
    for spec in ("gpt2", str(folder), str(folder / "tokenizer.json"), str(pair)):
        tokenizer = load_tokenizer(spec)
        assert tokenizer.encode("Hello world") == [15496, 995], spec
        assert (tokenizer.vocab_size, tokenizer.eos_id) == (50257, 50256)
        assert tokenizer.encode("Hi<|endoftext|>")[-1] == 50256 and tokenizer.decode([15496, 995]) == "Hello world"


def test_hub_fails_at_the_probe_when_offline_naming_the_local_fix(tmp_path, monkeypatch):
    """The project's own probe answers (a ConfigError naming the fix), not the HF client's retries."""
    monkeypatch.setenv("GPTSWEEP_DATA_DIR", str(tmp_path))  # no local copies
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load in (lambda: load_tokenizer("gpt2"), lambda: read_documents("wikitext-2", "train"),
                 lambda: read_classification("ag_news", "test")):
        with pytest.raises(ConfigError, match="pass a local path or set GPTSWEEP_DATA_DIR"):
            load()
    # Without the offline flags, the probe connects; a closed local port stands in for an unreachable hub.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="127.0.0.1:9 is unreachable"):
        load_tokenizer("gpt2")
