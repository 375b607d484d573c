"""Shared fixtures: an isolated token cache for every test, a tiny synthetic corpus, the real data when present.
Helpers that tests import live in tests/support.py (no test imports this file).

    pytest tests
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.support import REPO, make_tiny_documents

# One torch thread in the test process: Ray trials and CLI subprocesses share the 2 cores with it, and OpenMP
# threads spin-waiting for a busy core made the suite ~20x slower under that contention (150 s vs 6.6 s).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_and_offline(tmp_path, monkeypatch):
    """No test writes token caches into the user's home, and none waits on the network."""
    monkeypatch.setenv("GPTSWEEP_CACHE_DIR", str(tmp_path / "gptsweep-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """The real data folder (GPTSWEEP_DATA_DIR, else ../shared/data next to the repo), exported as
    GPTSWEEP_DATA_DIR for the code under test; the test is skipped when it is absent."""
    path = Path(os.environ.get("GPTSWEEP_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (path / "wikitext-2").is_dir():
        pytest.skip(f"real data not found at {path}; set GPTSWEEP_DATA_DIR")
    monkeypatch.setenv("GPTSWEEP_DATA_DIR", str(path))
    return path


@pytest.fixture
def tiny_documents() -> list[str]:
    return make_tiny_documents()


@pytest.fixture
def tiny_corpus(tmp_path, tiny_documents) -> Path:
    """tiny_documents as a .txt, separated by blank lines."""
    path = tmp_path / "tiny.txt"
    path.write_text("\n\n".join(tiny_documents) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def smoke_trainer(tiny_corpus):
    """A factory of smoke-preset Pretrainers on the tiny corpus with a 300-token BPE: smoke_trainer(**overrides)."""
    from trainer.config import build_config, with_vocab_size
    from trainer.data import prepare_corpus
    from trainer.loop import Pretrainer

    def make(**overrides) -> Pretrainer:
        cfg = build_config("smoke", {"data.source": str(tiny_corpus), "data.tokenizer": "bpe:300", **overrides})
        corpus, tokenizer = prepare_corpus(cfg.data, cfg.model.context_length)
        return Pretrainer(with_vocab_size(cfg, corpus.vocab_size), corpus, tokenizer)
    return make
