"""Where text comes from: hub names, local files and folders, and AG News classification tables.

    pytest tests/trainer/test_data.py -k "documents or split_files or ag_news or offline"

A hub name (wikitext-2, tinystories, ag_news) is read from `$GPTSWEEP_DATA_DIR/<name>/` when that folder exists,
so CI and offline machines never touch the network; otherwise from the Hugging Face hub. Any other bare name is a
folder of `$GPTSWEEP_DATA_DIR` (`--data gutenberg`). A folder's files belong to
the split their name contains (train, valid/validation, test).
"""
from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from trainer.config import ConfigError

# pandas (~1.3 s to import) and datasets (~2 s; it also reads the telemetry switches when imported) are imported
# where a table or a hub dataset is read: checking names and paths, all that bad input needs, waits for neither.

# name → (hub id, config, splits the hub has)
HUB = {
    "wikitext-2": ("Salesforce/wikitext", "wikitext-2-raw-v1", ("train", "validation", "test")),
    "tinystories": ("roneneldan/TinyStories", None, ("train", "validation")),
    "ag_news": ("fancyzhx/ag_news", None, ("train", "test")),
}
TEXT_SUFFIXES = (".txt", ".raw", ".tokens")
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
SPLITS = ("train", "validation", "test")
_SPLIT_WORD = re.compile(r"(?<![a-z])(train|valid|test)")  # at a word start: 'contest.txt' is not a test file
# A WikiText level-1 heading (` = Title = `, not ` = = Section = = `). Requiring blank lines around it keeps out
# the few body lines that look like one (` = 1 henry and capacitance C = ` in a formula, table legends).
_WIKI_HEADING = re.compile(r"^ = [^=].* = $")


def local_copy(name: str) -> Path | None:
    """`$GPTSWEEP_DATA_DIR/<name>/` when it exists."""
    root = os.environ.get("GPTSWEEP_DATA_DIR")
    folder = Path(root).expanduser() / name if root else None
    return folder if folder is not None and folder.is_dir() else None


def require_hub(what: str, datasets: bool = True) -> None:
    """Fail in about a second when the hub is unreachable, instead of the HF client's ~46 s of retries."""
    fix = f"{what} needs the Hugging Face hub; pass a local path or set GPTSWEEP_DATA_DIR to a folder of local copies"
    for var in ("HF_HUB_OFFLINE",) + (("HF_DATASETS_OFFLINE",) if datasets else ()):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise ConfigError(f"{fix} ({var} is set)")
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    address = (url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443))
    reached = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=1.0).close()
            reached.append(True)
        except OSError:
            pass

    # A thread bounds the DNS lookup too, which the socket timeout does not cover.
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(1.5)
    if not reached:
        raise ConfigError(f"{fix} ({address[0]}:{address[1]} is unreachable)")


def local_split_files(folder: Path) -> dict[str, list[Path]]:
    """Split → data files, by the name convention. Files naming no split count as train only when no file
    names one, so a folder holding just `stories.txt` works and `classes.txt` next to `train.csv` is ignored."""
    files = sorted(p for p in Path(folder).iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix in TEXT_SUFFIXES + TABLE_SUFFIXES)
    splits: dict[str, list[Path]] = {}
    for path in files:
        word = _SPLIT_WORD.search(path.name.lower())
        if word:
            splits.setdefault({"valid": "validation"}.get(word[1], word[1]), []).append(path)
    return splits or ({"train": files} if files else {})


def _resolve(spec: str) -> Path | str:
    """A local path (an existing path, or the local copy of a hub name) or the hub name itself."""
    if spec in HUB:
        return local_copy(spec) or spec
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if os.sep in spec or path.suffix:
        raise ConfigError(f"data path '{spec}' does not exist; pass an existing file or folder "
                          "(or one of wikitext-2, tinystories, ag_news)")
    folder = local_copy(spec)  # a corpus of the local copies by its folder name (gutenberg)
    if folder is not None:
        return folder
    raise ConfigError(f"unknown dataset '{spec}'; use wikitext-2, tinystories, ag_news, a folder name in "
                      "GPTSWEEP_DATA_DIR or a path to a local file/folder")


def available_splits(spec: str) -> list[str]:
    """The splits `spec` can give; a single file is all 'train'."""
    target = _resolve(spec)
    if isinstance(target, str):
        return list(HUB[target][2])
    if target.is_file():
        return ["train"]
    splits = local_split_files(target)
    if not splits:
        raise ConfigError(f"folder {target} holds no {'/'.join(TEXT_SUFFIXES + TABLE_SUFFIXES)} files; "
                          "pass a folder of data files or a single file")
    return [s for s in SPLITS if s in splits]


def split_files(spec: str, split: str) -> list[Path] | None:
    """The local files holding `split` of `spec` (a single file is its own every split); None: from the hub."""
    target = _resolve(spec)
    if isinstance(target, str):
        return None
    if target.is_file():
        return [target]
    splits = local_split_files(target)
    if split not in splits:
        raise ConfigError(f"folder {target} has no '{split}' files (found: {', '.join(splits) or 'none'}); "
                          "put the split's name (train, valid, test) in the file names")
    return splits[split]


def split_documents(text: str) -> tuple[list[str], str]:
    """Documents and the layout found: WikiText articles, `<|endoftext|>`-separated, or blank-line paragraphs."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines)
              if _WIKI_HEADING.match(line) and (i == 0 or not lines[i - 1].strip())
              and i + 1 < len(lines) and not lines[i + 1].strip()]
    if starts:
        # An article runs from its heading line to the blank line before the next heading; the newline between
        # articles gives way to the EOS token, and text before the first heading belongs to the first article.
        # These boundaries reproduce the reference counts published with the shared data copy (60 articles).
        bounds = [0] + starts[1:] + [len(lines)]
        docs = ["\n".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]
        return docs, "wikitext articles"
    if "<|endoftext|>" in text:
        parts, layout = text.split("<|endoftext|>"), "<|endoftext|>-separated documents"
    else:
        parts, layout = re.split(r"\n[ \t]*\n", text), "blank-line-separated documents"
    return [p.strip() for p in parts if p.strip()], layout


def _read_table(path: Path):
    import pandas as pd

    try:
        if path.suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)  # keep_default_na: the text "NA" stays text
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        with open(path, encoding="utf-8") as f:
            json_lines = path.suffix == ".jsonl" or f.read(64).lstrip()[:1] != "["
        return pd.read_json(path, lines=json_lines, dtype=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                          "pass a readable UTF-8 file") from None


def _file_documents(path: Path) -> tuple[list[str], str]:
    if path.suffix in TEXT_SUFFIXES:
        try:
            docs, layout = split_documents(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}; pass a readable UTF-8 text file") from None
    elif path.suffix in TABLE_SUFFIXES:
        table = _read_table(path)
        if "text" not in table.columns:
            raise ConfigError(f"{path} has no 'text' column (columns: {', '.join(map(str, table.columns))}); "
                              "give a table with a 'text' column")
        docs, layout = [t.strip() for t in table["text"] if isinstance(t, str) and t.strip()], "rows"
    else:
        raise ConfigError(f"unsupported file type '{path.suffix}' for {path}; "
                          f"use {', '.join(TEXT_SUFFIXES + TABLE_SUFFIXES)}")
    if not docs:
        raise ConfigError(f"{path} holds no text; pass a non-empty corpus")
    return docs, layout


def _hub(name: str, split: str):
    hub_id, config, splits = HUB[name]
    if split not in splits:
        raise ConfigError(f"hub dataset '{name}' has no '{split}' split (it has {', '.join(splits)})")
    require_hub(f"dataset '{name}'")
    import datasets

    return datasets.load_dataset(hub_id, config, split=split), f"hub {hub_id}{'/' + config if config else ''} [{split}]"


def read_documents(spec: str, split: str) -> tuple[list[str], str]:
    """Documents of one split, and where they came from (file names, document counts, layout)."""
    files = split_files(spec, split)
    if files is None:
        rows, where = _hub(spec, split)
        if spec == "wikitext-2":  # one row per line, blank lines as "": rebuild the file to find the articles
            docs, layout = split_documents("\n".join(r.rstrip("\n") or " " for r in rows["text"]) + "\n")
        else:
            docs, layout = [t.strip() for t in rows["text"] if t.strip()], "rows"
        return docs, f"{where} ({len(docs)} {layout})"
    docs, parts = [], []
    for path in files:
        found, layout = _file_documents(path)
        docs += found
        parts.append(f"{path} ({len(found)} {layout})")
    return docs, ", ".join(parts)


def _labels(values, path: Path, base: int) -> np.ndarray:
    """Class ids 0..3 from labels base..base+3 given as text or numbers ('2', '2.0', 2)."""
    import pandas as pd

    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers)) | (numbers < base) | (numbers > base + 3)
    if bad.any():
        row = int(np.argmax(bad))
        raise ConfigError(f"{path}: label {values[row]!r} in row {row + 1} is not one of {base}-{base + 3}; "
                          "use labels 0-3 with a text,label header, or the original AG News layout "
                          "(class 1-4, title, description; no header)")
    return numbers.astype(np.int64) - base


def _read_labeled(path: Path) -> tuple[list[str], np.ndarray]:
    if path.suffix not in TABLE_SUFFIXES:
        raise ConfigError(f"classification data {path} must be one of {', '.join(TABLE_SUFFIXES)}")
    table, base = _read_table(path), 0
    columns = [str(c).strip() for c in table.columns]
    if "text" not in columns and path.suffix == ".csv" and len(columns) == 3 and columns[0].isdigit():
        # The original AG News layout: no header, class 1-4, title, description (its first row was read as a header).
        import pandas as pd

        table = pd.read_csv(path, header=None, names=["label", "title", "description"], dtype=str,
                            keep_default_na=False)
        table["text"], base = table["title"] + " " + table["description"], 1
    missing = [c for c in ("text", "label") if c not in table.columns]
    if missing:
        raise ConfigError(f"{path} has no {' or '.join(repr(c) for c in missing)} column (columns: "
                          f"{', '.join(columns)}); give a table with text,label columns (labels 0-3) or the "
                          "original AG News CSV layout (class 1-4, title, description; no header)")
    return [str(t) for t in table["text"]], _labels(list(table["label"]), path, base)


def read_classification(spec: str, split: str) -> tuple[list[str], np.ndarray]:
    """Texts and int64 labels 0..3 of one split: `ag_news` (local copy or hub), a table, or a folder of tables."""
    target = _resolve(spec)
    if isinstance(target, str):
        if target != "ag_news":
            raise ConfigError(f"'{spec}' is not a classification dataset; use ag_news or a local CSV/JSONL/parquet")
        rows, _ = _hub(target, split)
        return list(rows["text"]), np.asarray(rows["label"], dtype=np.int64)
    files = [p for p in split_files(spec, split) if p.suffix in TABLE_SUFFIXES]
    if not files:
        raise ConfigError(f"{target} has no {'/'.join(TABLE_SUFFIXES)} table for the '{split}' split")
    texts, labels = [], []
    for path in files:
        t, y = _read_labeled(path)
        texts += t
        labels.append(y)
    if not texts:
        raise ConfigError(f"{', '.join(map(str, files))} holds no rows; pass a non-empty table")
    return texts, np.concatenate(labels)
