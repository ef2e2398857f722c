"""Network files on disk: where each kind lives, how it is read safely, and what its cards show.

Files are found by name (their stem, in A1111's folders and their subfolders), never by a path from a request.
Weights are read without running code: ``.safetensors`` by its own loader, ``.pt``/``.ckpt``/``.bin`` only through
``torch.load(weights_only=True)``, which refuses any pickle that would import or call something. Every failure
becomes a ``NetworkError`` naming the file, so a generation can report it and go on without that file.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..atomic import replace_text
from ..errors import EaselError

# kind -> (folder under models/, file suffixes), with A1111's folder names.
KINDS = {
    "lora": ("Lora", (".safetensors", ".pt", ".ckpt")),
    "hypernet": ("hypernetworks", (".pt",)),
    "embedding": ("embeddings", (".safetensors", ".pt", ".bin")),
}
LABELS = {"lora": "LoRA", "hypernet": "Hypernetwork", "embedding": "Embedding"}
# A1111's user metadata of a network (its card's edit dialog): what a card adds to the prompts besides the tag, and
# the weight it writes there (0: the default, 1).
USER_METADATA = ("description", "activation text", "preferred weight", "negative text", "notes")
_PREVIEWS = tuple(f"{infix}.{ext}" for infix in ("", ".preview") for ext in ("png", "jpg", "jpeg", "webp"))
# Cross-attention (text context) width of each family; anything else is shown by its width.
FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


class NetworkError(EaselError):
    """A network file that cannot be used: missing, corrupt, of another family or of an unknown format."""


def family_name(context_width: int | None) -> str:
    if context_width is None:
        return "unknown"
    return FAMILIES.get(context_width, f"context {context_width}")


@dataclass(frozen=True)
class NetworkFile:
    kind: str
    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{LABELS[self.kind]} {self.name!r} ({self.path.name})"

    @property
    def preview(self) -> Path | None:
        """A picture beside the file (``name.png``, ``name.preview.png``, ...), as A1111 finds it."""
        stem = self.path.with_suffix("")
        return next((p for p in (Path(f"{stem}{s}") for s in _PREVIEWS) if p.is_file()), None)

    @property
    def metadata_path(self) -> Path:
        return self.path.with_suffix(".json")

    def user_metadata(self) -> dict[str, Any]:
        """A1111's user metadata, ``name.json`` beside the file (``USER_METADATA`` and any other keys); empty when there
        is none or it cannot be read."""
        try:
            data = json.loads(self.metadata_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_user_metadata(self, values: dict[str, Any]) -> None:
        """``values`` into ``name.json``, keeping the other keys it holds (A1111 keeps its own there too)."""
        replace_text(self.metadata_path, json.dumps({**self.user_metadata(), **values}, indent=4, ensure_ascii=False))

    @property
    def signature(self) -> tuple:
        """Changes when the file does, so a replaced file is read again."""
        stat = self.path.stat()
        return str(self.path), stat.st_size, stat.st_mtime_ns


def list_files(models_dir: Path, kind: str) -> list[NetworkFile]:
    """The files of one kind, by name; a name found twice (in two subfolders) is the first in path order."""
    folder, suffixes = KINDS[kind]
    root = Path(models_dir) / folder
    if not root.is_dir():
        return []
    found: dict[str, NetworkFile] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file():
            found.setdefault(path.stem, NetworkFile(kind, path.stem, path))
    return sorted(found.values(), key=lambda f: f.name.lower())


def find(models_dir: Path, kind: str, name: str) -> NetworkFile:
    for item in list_files(models_dir, kind):
        if item.name == name:
            return item
    raise NetworkError(f"{LABELS[kind]} {name!r} not found in {Path(models_dir) / KINDS[kind][0]}: skipped.")


def read_weights(item: NetworkFile) -> dict[str, Any]:
    """The file's contents, read without executing anything."""
    import torch

    try:
        if item.path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(item.path)
        data = torch.load(item.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every reader failure is one message naming the file
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise NetworkError(f"{item.label} is a pickle that would run code when loaded; it was refused. "
                               "Use a .safetensors version of it.") from None
        raise NetworkError(f"{item.label} cannot be read (corrupt or not a weights file): {exc}") from None
    if not isinstance(data, dict):
        raise NetworkError(f"{item.label} holds a {type(data).__name__}, not a dictionary of weights.")
    return data


def safetensors_header(path: Path) -> dict[str, Any]:
    """A safetensors file's header (tensor names, shapes, ``__metadata__``) without reading its tensors."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > 100 * 2**20:
            raise ValueError("header too large")
        return json.loads(fh.read(length))


def tensor_shapes(item: NetworkFile) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a flat weights file (the header alone for safetensors)."""
    if item.path.suffix.lower() == ".safetensors":
        try:
            header = safetensors_header(item.path)
        except (OSError, ValueError, struct.error) as exc:
            raise NetworkError(f"{item.label} is not a readable safetensors file: {exc}") from None
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    return {k: tuple(v.shape) for k, v in read_weights(item).items() if hasattr(v, "shape")}


def metadata(item: NetworkFile) -> dict[str, str]:
    """The safetensors ``__metadata__`` (kohya's ``ss_*`` training notes), or nothing."""
    if item.path.suffix.lower() != ".safetensors":
        return {}
    try:
        return dict(safetensors_header(item.path).get("__metadata__") or {})
    except (OSError, ValueError, struct.error):
        return {}


def describe(item: NetworkFile) -> str:
    """The family a card shows ("SD 1.x", "SDXL", ...), or why the file is unusable."""
    return _describe(item.kind, *item.signature)


@lru_cache(maxsize=1024)
def _describe(kind: str, path: str, size: int, mtime: int) -> str:
    from . import hypernetwork, lora

    item = NetworkFile(kind, Path(path).stem, Path(path))
    try:
        if kind == "lora":
            return lora.family(tensor_shapes(item))
        if kind == "hypernet":
            data = read_weights(item)
            widths = hypernetwork.widths(data)
            if hypernetwork.context_width(data) or not widths:
                return family_name(hypernetwork.context_width(data))
            return "widths " + "/".join(map(str, widths))
        return _embedding_family(read_weights(item))
    except NetworkError:
        return "unreadable"


def _embedding_family(data: dict[str, Any]) -> str:
    """A1111 (``string_to_param``), safetensors (``emb_params``) and SDXL (``clip_l``/``clip_g``) embeddings."""
    if "clip_g" in data:
        return "SDXL"
    vectors = data.get("string_to_param", {}).get("*") if isinstance(data.get("string_to_param"), dict) else None
    if vectors is None:
        vectors = data.get("emb_params", next((v for v in data.values() if hasattr(v, "shape")), None))
    return family_name(int(vectors.shape[-1])) if hasattr(vectors, "shape") else "unknown"
