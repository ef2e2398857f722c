"""A1111's short model hash (first 10 hex digits of a sha256), for files and diffusers folders.

Hashing a multi-GB checkpoint takes seconds, so results are cached by path, size and modification time.
A folder's hash covers its weight files in sorted order, so an unchanged folder keeps its hash.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_cache: dict[tuple, str] = {}
_lock = threading.Lock()


def weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def short_hash(path: str | Path) -> str:
    files = weight_files(Path(path))
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    with _lock:
        if key in _cache:
            return _cache[key]
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    with _lock:
        _cache[key] = digest.hexdigest()[:10]
    return _cache[key]
