"""Which bytes a run started from: a cheap fingerprint of a checkpoint or tokenizer.

A run directory resumes only when its inputs are the same. Paths alone do not say that (a
checkpoint re-exported to the same folder, a tokenizer replaced in place), and hashing a
whole 3B-56 GB checkpoint on every start would take minutes, so a file is fingerprinted by
its size and the sha256 of ``SAMPLES`` evenly spaced ``CHUNK``-byte slices (the whole file
when it is smaller than that): two checkpoints of one architecture differ in their weight
bytes nearly everywhere a fine-tune touched, so a change is caught unless it avoids every
slice. A folder is the fingerprint of its files (names relative to it, recursively).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SAMPLES = 16
CHUNK = 1 << 16


def _file(path: Path, h) -> None:
    size = path.stat().st_size
    h.update(f"{size}\0".encode())
    with open(path, "rb") as f:
        if size <= SAMPLES * CHUNK:
            h.update(f.read())
            return
        for i in range(SAMPLES):
            f.seek((size - CHUNK) * i // (SAMPLES - 1))
            h.update(f.read(CHUNK))


def sampled_digest(path: str | Path | None) -> str | None:
    """16 hex digits for a file or folder (see the module docstring); None when ``path`` is
    None or does not exist (the loader that reads it then says what is missing)."""
    if path is None:
        return None
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        _file(path, h)
    elif path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(f"{p.relative_to(path).as_posix()}\0".encode())
            _file(p, h)
    else:
        return None
    return h.hexdigest()[:16]


def inputs(checkpoint, tokenizer) -> dict[str, str | None]:
    """``{"checkpoint": digest, "tokenizer": digest}``: what ``config.json`` records as "inputs"."""
    return {"checkpoint": sampled_digest(checkpoint), "tokenizer": sampled_digest(tokenizer)}
