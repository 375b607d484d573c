"""Data layer: sources, packing, batching, the token cache, fine-tuning tables (tokenizers: test_tokenizer.py).

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 pytest tests/trainer/test_data.py -q
"""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch

from trainer.config import ConfigError, DataConfig
from trainer.data import (ChunkBatcher, FinetuneData, cache_dir, fewshot_indices, pack, prepare_corpus,
                          prepare_finetune, token_dtype, val_batches)
from trainer.sources import local_split_files, read_classification, read_documents
from trainer.tokenizer import TextTokenizer, load_tokenizer


def _docs_between_eos(tokens: np.ndarray, tokenizer: TextTokenizer) -> list[str]:
    ends = np.flatnonzero(np.asarray(tokens) == tokenizer.eos_id)
    return [tokenizer.decode(tokens[a + 1:b]) for a, b in zip(np.r_[-1, ends[:-1]], ends)]


# --- packing and batches -------------------------------------------------------------------------------------

def test_pack_cuts_non_overlapping_windows_and_drops_the_tail():
    chunks = pack(np.arange(103), context_length=9)
    assert chunks.shape == (10, 10)
    np.testing.assert_array_equal(chunks.ravel(), np.arange(100))  # no overlap, no chunk past the end
    assert pack(np.arange(9), context_length=9).shape == (0, 10)


def test_batches_shift_targets_by_one():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = ChunkBatcher(tokens, 16, 4, seed=0).next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert all(int(row[0]) % 17 == 0 for row in x)  # every row starts at a chunk boundary


def test_chunk_batcher_is_seeded_reshuffles_each_epoch_and_resumes():
    tokens, n_chunks = np.arange(17 * 10, dtype=np.uint16), 10
    first = ChunkBatcher(tokens, 16, 5, seed=3)
    epoch0 = torch.cat([first.next_batch()[0][:, 0] for _ in range(2)]) // 17
    assert sorted(epoch0.tolist()) == list(range(n_chunks))  # one epoch sees every chunk once
    epoch1 = torch.cat([first.next_batch()[0][:, 0] for _ in range(2)]) // 17
    assert sorted(epoch1.tolist()) == list(range(n_chunks)) and not torch.equal(epoch0, epoch1)
    other_seed = ChunkBatcher(tokens, 16, 5, seed=4).next_batch()[0]
    assert not torch.equal(other_seed, ChunkBatcher(tokens, 16, 5, seed=3).next_batch()[0])

    run = ChunkBatcher(tokens, 16, 3, seed=1)
    for _ in range(5):
        run.next_batch()
    state = json.loads(json.dumps(run.state_dict()))  # survives a checkpoint round trip
    expected = [run.next_batch() for _ in range(6)]  # spans epoch boundaries (3 does not divide 10)
    resumed = ChunkBatcher(tokens, 16, 3, seed=1)
    resumed.load_state_dict(state)
    for (x, y), (ex, ey) in zip((resumed.next_batch() for _ in range(6)), expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_val_batches_are_fixed_and_in_order():
    tokens = np.arange(17 * 7, dtype=np.uint16)
    batches = val_batches(tokens, 16, 3, max_batches=10)
    assert [len(x) for x, _ in batches] == [3, 3, 1]  # all 7 chunks, the last batch short
    torch.testing.assert_close(batches[0][0], torch.from_numpy(pack(tokens, 16)[:3, :-1].astype(np.int64)))
    assert len(val_batches(tokens, 16, 3, max_batches=2)) == 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, val_batches(tokens, 16, 3, 10)))


# --- documents -----------------------------------------------------------------------------------------------

WIKI = (" \n = Alpha = \n \n Alpha is a letter . \n \n = = History = = \n \n It is old .\n"
        " The value L \n = 1 henry and capacitance C = \n is exact . \n \n = Beta = \n \n Beta follows . \n \n")


@pytest.mark.parametrize("text, expected", [
    (WIKI, [" \n = Alpha = \n \n Alpha is a letter . \n \n = = History = = \n \n It is old .\n The value L \n"
            " = 1 henry and capacitance C = \n is exact . \n ", " = Beta = \n \n Beta follows . \n \n"]),
    ("Once upon a time.\nThe end.\n<|endoftext|>\nAnother story.\n<|endoftext|>\n", ["Once upon a time.\nThe end.",
                                                                                   "Another story."]),
    ("First paragraph\nstill first.\n\n  \nSecond one.\n\n\nThird.", ["First paragraph\nstill first.",
                                                                     "Second one.", "Third."]),
], ids=["wikitext", "endoftext", "blank-lines"])
def test_text_files_split_into_documents_by_layout(tmp_path, text, expected):
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    docs, where = read_documents(str(path), "train")
    assert docs == expected and str(path) in where


def test_tables_and_folders(tmp_path):
    (tmp_path / "a_train.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    (tmp_path / "b-valid.csv").write_text("id,text\n1,three\n2,NA\n", encoding="utf-8")
    (tmp_path / "contest.txt").write_text("not a split\n", encoding="utf-8")  # 'contest' does not name 'test'
    (tmp_path / "README.md").write_text("ignored\n", encoding="utf-8")
    assert {k: [p.name for p in v] for k, v in local_split_files(tmp_path).items()} == {
        "train": ["a_train.jsonl"], "validation": ["b-valid.csv"]}
    assert read_documents(str(tmp_path), "train")[0] == ["one", "two"]
    assert read_documents(str(tmp_path), "validation")[0] == ["three", "NA"]
    with pytest.raises(ConfigError, match="no 'test' files"):
        read_documents(str(tmp_path), "test")
    only = tmp_path / "only"
    only.mkdir()
    (only / "stories.txt").write_text("a\n\nb\n", encoding="utf-8")
    assert local_split_files(only) == {"train": [only / "stories.txt"]}  # no split names: all is train


def test_hub_rows_are_read_like_local_files(tmp_path, monkeypatch):
    """The hub path without a network: HF's wikitext has one row per line, blank lines as ''."""
    rows = {("Salesforce/wikitext", "wikitext-2-raw-v1", "train"): {"text": [
                line + "\n" if line.strip() else "" for line in WIKI.split("\n")[:-1]]},
            ("roneneldan/TinyStories", None, "validation"): {"text": ["A story.", "  ", "Another."]},
            ("fancyzhx/ag_news", None, "test"): {"text": ["x", "y"], "label": [3, 0]}}
    # Only the exact (id, config, split) the hub has: WikiText-103 or the tokenized variant would be a KeyError.
    fake = types.SimpleNamespace(load_dataset=lambda hub_id, config, split: rows[hub_id, config, split])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr("trainer.sources.require_hub", lambda what: None)
    monkeypatch.setenv("GPTSWEEP_DATA_DIR", str(tmp_path))  # no local copies
    (tmp_path / "wiki.txt").write_text(WIKI, encoding="utf-8")
    docs, where = read_documents("wikitext-2", "train")
    assert docs == read_documents(str(tmp_path / "wiki.txt"), "train")[0] and "hub Salesforce/wikitext" in where
    assert read_documents("tinystories", "validation")[0] == ["A story.", "Another."]
    texts, labels = read_classification("ag_news", "test")
    assert texts == ["x", "y"] and labels.tolist() == [3, 0] and labels.dtype == np.int64
    with pytest.raises(ConfigError, match="has no 'validation' split"):
        read_classification("ag_news", "validation")


def test_bad_sources_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; use wikitext-2"):
        read_documents("nope", "train")
    with pytest.raises(ConfigError, match="missing.txt"):
        read_documents(str(tmp_path / "missing.txt"), "train")
    (tmp_path / "empty.txt").write_text(" \n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty.txt holds no text"):
        read_documents(str(tmp_path / "empty.txt"), "train")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read .*binary.txt"):
        read_documents(str(tmp_path / "binary.txt"), "train")
    (tmp_path / "notext.csv").write_text("body\nx\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="notext.csv has no 'text' column"):
        read_documents(str(tmp_path / "notext.csv"), "train")


# --- AG News tables ------------------------------------------------------------------------------------------

def test_ag_news_both_layouts(tmp_path):
    original = tmp_path / "orig.csv"
    original.write_text('"3","Title A","Desc, with comma"\n"1","T2","D2"\n"4","T3","say ""hi"""\n', encoding="utf-8")
    texts, labels = read_classification(str(original), "test")
    assert texts == ["Title A Desc, with comma", "T2 D2", 'T3 say "hi"'] and labels.tolist() == [2, 0, 3]
    assert labels.dtype == np.int64
    sample = tmp_path / "sample.csv"
    sample.write_text('text,label\n"A story, told",2.0\nAnother,0.0\nLast,3\n', encoding="utf-8")
    assert read_classification(str(sample), "train") == (["A story, told", "Another", "Last"], pytest.approx([2, 0, 3]))
    lines = tmp_path / "rows.jsonl"
    lines.write_text('{"text": "x", "label": 1}\n{"text": "y", "label": 3}\n', encoding="utf-8")
    assert read_classification(str(lines), "train")[1].tolist() == [1, 3]


@pytest.mark.parametrize("content, match", [
    ("text,label\na,0.0\nb,4.0\n", r"bad.csv: label '4.0' in row 2 is not one of 0-3"),
    ("text,label\na,1.5\n", r"label '1.5' in row 1"),
    ('"0","T","D"\n', r"label '0' in row 1 is not one of 1-4"),  # the original layout counts from 1
    ("text,category\na,1\n", r"bad.csv has no 'label' column"),
])
def test_bad_labels_and_missing_columns(tmp_path, content, match):
    (tmp_path / "bad.csv").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        read_classification(str(tmp_path / "bad.csv"), "train")


def test_real_ag_news_files(shared_data):
    texts, labels = read_classification("ag_news", "train")
    assert len(texts) == 5000 and np.bincount(labels).tolist() == [1210, 1317, 1224, 1249]
    texts, labels = read_classification("ag_news", "test")
    assert len(texts) == 7600 and np.bincount(labels).tolist() == [1900] * 4
    assert texts[0].startswith("Fears for T N pension after talks Unions representing") and labels[0] == 2


def test_fewshot_indices_take_rows_round_robin_over_classes():
    labels = np.array([0, 0, 0, 0, 1, 2, 1, 0, 2, 3])
    np.testing.assert_array_equal(fewshot_indices(labels, 4), [0, 4, 5, 9])
    np.testing.assert_array_equal(fewshot_indices(labels, 6), [0, 1, 4, 5, 6, 9])
    assert len(fewshot_indices(labels, 100)) == 10
    np.testing.assert_array_equal(fewshot_indices(labels, 4, seed=7), fewshot_indices(labels, 4))


def test_prepare_finetune_pads_with_eos(tmp_path, tiny_corpus):
    (tmp_path / "ft_train.csv").write_text("text,label\nthe cat,0\n,1\nthe old river town again,2\n", encoding="utf-8")
    (tmp_path / "ft_test.csv").write_text("text,label\nthe storm,3\n", encoding="utf-8")
    tokenizer = load_tokenizer("bpe:300", [tiny_corpus.read_text()])
    assert prepare_finetune(DataConfig(), tokenizer, 8) is None
    data = prepare_finetune(DataConfig(finetune_train=str(tmp_path)), tokenizer, 4)
    assert isinstance(data, FinetuneData) and data.train_ids.shape == (3, 4) and data.test_ids.shape == (1, 4)
    assert data.train_labels.tolist() == [0, 1, 2] and data.test_labels.tolist() == [3]
    assert data.train_lengths[1] == 1 and data.train_lengths[2] == 4  # empty text: one EOS; long: truncated
    row = data.train_ids[0]
    assert (row[data.train_lengths[0]:] == tokenizer.eos_id).all() and row.dtype == np.int64
    with pytest.raises(ConfigError, match="no test split; pass --finetune-test"):
        prepare_finetune(DataConfig(finetune_train=str(tmp_path / "ft_train.csv")), tokenizer, 4)


# --- prepare_corpus and the token cache ----------------------------------------------------------------------

def test_held_out_split_is_the_last_documents(tiny_corpus, tiny_documents):
    cfg = DataConfig(source=str(tiny_corpus), tokenizer="bpe:300", val_fraction=0.15)
    corpus, tokenizer = prepare_corpus(cfg, context_length=16)
    assert _docs_between_eos(corpus.train, tokenizer) == tiny_documents[:255]  # 300 - ceil(0.15 * 300)
    assert _docs_between_eos(corpus.val, tokenizer) == tiny_documents[255:]
    assert corpus.train[-1] == corpus.val[-1] == tokenizer.eos_id
    assert "the first 255 of" in corpus.summary and "the last 45 of them" in corpus.summary


def test_second_prepare_corpus_tokenizes_nothing(tiny_corpus, monkeypatch):
    cfg = DataConfig(source=str(tiny_corpus), tokenizer="bpe:300")
    first, tokenizer = prepare_corpus(cfg, context_length=16)
    assert "cache written" in first.summary

    def forbidden(*args, **kwargs):
        raise AssertionError("tokenized or trained on a cache hit")

    with monkeypatch.context() as patch:
        patch.setattr(TextTokenizer, "encode_batch", forbidden)
        patch.setattr("trainer.tokenizer.train_bpe", forbidden)
        patch.setattr("trainer.data.read_documents", forbidden)
        second, reloaded = prepare_corpus(cfg, context_length=16)
    assert "cache hit" in second.summary and isinstance(second.train, np.memmap)
    np.testing.assert_array_equal(first.train, second.train)
    np.testing.assert_array_equal(first.val, second.val)
    assert reloaded.to_json() == tokenizer.to_json()
    entries = list(cache_dir().iterdir())
    assert len(entries) == 1 and {p.name for p in entries[0].iterdir()} == {
        "train.npy", "val.npy", "meta.json", "tokenizer.json"}  # no temporary folder left behind
    tiny_corpus.write_text(tiny_corpus.read_text() + "\nOne more document.\n")
    assert "cache written" in prepare_corpus(cfg, context_length=16)[0].summary  # new contents, new key


def test_corpus_shorter_than_a_window_is_rejected(tmp_path):
    (tmp_path / "small.txt").write_text("one two three\n\nfour five six\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="corpus has .* tokens, fewer than one context window of 65"):
        prepare_corpus(DataConfig(source=str(tmp_path / "small.txt"), tokenizer="bpe:300"), context_length=64)


def test_token_dtype():
    assert token_dtype(50257) == np.uint16 and token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_reference_split_of_wiki_test_raw(shared_data):
    """The figures in the data copy's README: one EOS per article, GPT-2 tokenizer, held out by articles."""
    corpus, tokenizer = prepare_corpus(DataConfig(source="wikitext-2", tokenizer="gpt2", val_fraction=0.1), 128)
    assert (len(corpus.train), len(corpus.val)) == (258_554, 27_668)
    assert corpus.train.dtype == np.uint16 and (corpus.vocab_size, corpus.eos_id) == (50257, 50256)
    assert (corpus.train == 50256).sum() == 54 and (corpus.val == 50256).sum() == 6
    assert "wiki.test.raw (60 wikitext articles)" in corpus.summary
    articles = _docs_between_eos(corpus.val, tokenizer)
    assert articles[0].startswith(" = Commonwealth War Graves Commission = \n")
    assert articles[-1].startswith(" = The Hustler ( film ) = \n")
