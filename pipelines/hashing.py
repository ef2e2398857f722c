"""A1111's short hashes: a model's (first 10 hex digits of a sha256, for files and diffusers folders) and a
LoRA's (12 digits).

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


def _sha256(files: list[Path], tensors_only: bool = False) -> str:
    """The files' sha256 in hex, cached; ``tensors_only`` skips a safetensors file's JSON header."""
    key = (tensors_only, *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    with _lock:
        if key in _cache:
            return _cache[key]
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            if tensors_only:
                fh.seek(8 + int.from_bytes(fh.read(8), "little"))
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    with _lock:
        _cache[key] = digest.hexdigest()
    return _cache[key]


def short_hash(path: str | Path) -> str:
    return _sha256(weight_files(Path(path)))[:10]


def network_hash(path: str | Path) -> str:
    """A1111's 12-digit hash of a LoRA file (``Lora hashes``): of a safetensors file's tensor data alone (kohya's
    "addnet" hash, civitai's AutoV3), so editing its metadata keeps it; of the whole file otherwise."""
    path = Path(path)
    return _sha256([path], tensors_only=path.suffix.lower() == ".safetensors")[:12]
