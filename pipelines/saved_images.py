"""The pictures saved under the outputs folder, for the Image Browser tab: which folder holds what, the newest first,
found by words in their parameters, and small copies to show many at once.

A picture's parameters and thumbnail are read once per file version (path, size and modification time), so paging
through a folder of thousands opens each file once. A picture can be deleted, with the ``.txt`` of its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from stat import S_ISREG

from PIL import Image

from .infotext import read_infotext
from .outputs import FORMATS

# The folders Easel saves into (pipelines/engine.py, outputs.SaveLog), by the name the browser shows.
FOLDERS = {"txt2img": "txt2img-images", "img2img": "img2img-images", "txt2img grids": "txt2img-grids",
           "img2img grids": "img2img-grids", "Extras": "extras-images", "Saved": "log/images"}
ALL = "All"
SUFFIXES = {f".{suffix}" for suffix in FORMATS} | {".jpeg"}
THUMBNAIL = 256  # pixels, the longer side


@dataclass(frozen=True)
class SavedImage:
    path: Path
    size: int
    mtime_ns: int

    @property
    def parameters(self) -> str:
        return _parameters(self.path, self.size, self.mtime_ns)

    @property
    def thumbnail(self) -> Image.Image:
        return _thumbnail(self.path, self.size, self.mtime_ns)


def _saved(folder: Path) -> list[SavedImage]:
    """The pictures in ``folder`` and the folders under it (the date's, or a directory pattern's); files being
    written (dot names) are left out."""
    found = []
    for path in folder.rglob("*"):
        if path.suffix.lower() in SUFFIXES and not path.name.startswith("."):
            try:
                stat = path.stat()
            except OSError:  # removed meanwhile
                continue
            if S_ISREG(stat.st_mode):  # not a folder a pattern named like a picture
                found.append(SavedImage(path, stat.st_size, stat.st_mtime_ns))
    return found


def saved_images(root: str | Path, folder: str = ALL, search: str = "") -> list[SavedImage]:
    """The pictures in one of ``FOLDERS`` (or all of them), newest first, whose parameters hold every word of
    ``search`` (any case)."""
    if folder != ALL and folder not in FOLDERS:
        raise ValueError(f"Unknown folder {folder!r}: one of {ALL}, {', '.join(FOLDERS)}.")
    names = FOLDERS.values() if folder == ALL else [FOLDERS[folder]]
    images = [image for name in names for image in _saved(Path(root) / name)]
    words = search.lower().split()
    if words:
        images = [image for image in images if all(word in image.parameters.lower() for word in words)]
    return sorted(images, key=lambda image: (image.mtime_ns, image.path.name), reverse=True)


def delete(root: str | Path, image: SavedImage) -> list[Path]:
    """Delete a saved picture and the ``.txt`` of its parameters beside it (A1111's ``save_txt``); only a file
    inside one of ``FOLDERS`` (never through a link out of them). The files removed."""
    path, root = image.path.resolve(), Path(root).resolve()
    if not any(path.is_relative_to(root / name) for name in FOLDERS.values()):
        raise ValueError(f"{image.path} is not a picture of the outputs folder.")
    removed = []
    for file in (path, path.with_suffix(".txt")):
        try:
            file.unlink()
        except FileNotFoundError:  # gone already, or no .txt
            continue
        removed.append(file)
    return removed


@lru_cache(maxsize=65536)
def _parameters(path: Path, size: int, mtime_ns: int) -> str:
    try:
        with Image.open(path) as image:
            return read_infotext(image) or ""
    except OSError:  # not a picture after all, or gone
        return ""


@lru_cache(maxsize=256)
def _thumbnail(path: Path, size: int, mtime_ns: int) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMBNAIL, THUMBNAIL))  # a JPEG decodes at a fraction of its size
            picture = image.convert("RGB")
    except OSError:
        return Image.new("RGB", (THUMBNAIL, THUMBNAIL), "gray")
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    return picture
