"""A bare --data name that is no hub dataset names a folder of GPTSWEEP_DATA_DIR (`--data gutenberg`).

    pytest tests/trainer/test_data_dir_names.py
"""
from __future__ import annotations

import pytest

from trainer.config import ConfigError
from trainer.sources import available_splits, read_documents


def test_a_folder_of_the_local_copies_is_found_by_its_name(tmp_path, monkeypatch):
    books = tmp_path / "copies" / "books"
    books.mkdir(parents=True)
    (books / "books_train.txt").write_text("One book.<|endoftext|>Another book.\n", encoding="utf-8")
    monkeypatch.setenv("GPTSWEEP_DATA_DIR", str(tmp_path / "copies"))
    monkeypatch.chdir(tmp_path)  # no folder of that name here: the name, not a relative path, finds it
    assert available_splits("books") == ["train"]
    docs, where = read_documents("books", "train")
    assert docs == ["One book.", "Another book."] and "books_train.txt" in where


def test_a_name_found_nowhere_is_still_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTSWEEP_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="unknown dataset 'books'; use wikitext-2, .* a folder name in"):
        available_splits("books")
