"""The token cache's record of what it holds, and the check a cache passes before a run trusts it.

    python -m trainer --preset smoke --data corpus.txt --tokenizer bpe:512 --out /tmp/run   (a rerun checks, then maps)

When a cache is written, meta.json records each array's token count and a SHA-256 of every file beside it (the
arrays, a trained tokenizer). Before a cache is used, `damage` compares the files with that record and the ids
with the vocabulary: a truncated or edited array, a missing file or a broken meta.json is then rebuilt (the
caller says so in one line) instead of failing every trial with a traceback, or worse, training on garbage.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

META = "meta.json"
ARRAYS = ("train", "val")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(folder: Path, meta: dict) -> None:
    """Write meta.json last, with the digest of every file already in `folder` (computed from the files written)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != META)
    meta = {**meta, "sha256": {p.name: file_digest(p) for p in files}}
    (folder / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def damage(folder: Path) -> str | None:
    """None when the cache in `folder` is intact, else what is wrong with it, in a few words."""
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        digests, vocab_size = dict(meta["sha256"]), int(meta["vocab_size"])
        counts = {name: int(meta[name]["tokens"]) for name in ARRAYS}
    except FileNotFoundError:
        return f"{META} is missing"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{META} is unreadable ({type(error).__name__}: {error})"
    unrecorded = [f"{name}.npy" for name in ARRAYS if f"{name}.npy" not in digests]
    if unrecorded:
        return f"{META} records no checksum of {unrecorded[0]}"
    for name in ARRAYS:
        try:
            tokens = np.load(folder / f"{name}.npy", mmap_mode="r")
        except FileNotFoundError:
            return f"{name}.npy is missing"
        except (OSError, ValueError) as error:
            return f"{name}.npy is unreadable ({type(error).__name__})"
        if tokens.ndim != 1 or len(tokens) != counts[name]:
            return f"{name}.npy holds {tokens.size:,} tokens, {META} says {counts[name]:,}"
        if len(tokens) and int(tokens.max()) >= vocab_size:
            return f"{name}.npy holds token id {int(tokens.max())}, outside the vocabulary of {vocab_size}"
    for file_name, expected in digests.items():
        path = folder / file_name
        if not path.is_file():
            return f"{file_name} is missing"
        if file_digest(path) != expected:
            return f"{file_name} differs from the checksum recorded when it was written"
    return None
