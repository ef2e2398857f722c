"""Saving generated images the A1111 way: ``root/category/YYYY-MM-DD/NNNNN-SEED.png`` with the infotext inside.

The format is A1111's ``samples_format`` (``--samples-format``): PNG with the infotext in its ``parameters`` text
chunk, or JPEG or WebP (quality 80, A1111's ``jpeg_quality``) with it in the EXIF UserComment, where A1111 puts it
and PNG Info reads it back; grids and Extras' pictures take the same format.

A file, once written, is never overwritten and never seen half-written, even with several threads or
processes saving into the same folder: each image is fully written to a temp file first and then
hard-linked to its final name, and ``os.link`` fails atomically if that name is already taken.
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile
import threading
from pathlib import Path

from PIL import Image

from pipelines.infotext import exif_metadata, png_metadata

_LEADING_NUMBER = re.compile(r"^(\d+)")
_TEMP_PREFIX = ".tmp-"  # starts with a dot, so it never counts as a numbered image
FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}  # A1111's samples_format: Pillow's name for each
QUALITY = 80  # A1111's jpeg_quality, for JPEG and WebP


def _next_number_on_disk(folder: Path) -> int:
    """One past the highest leading number among the folder's files (0 when there are none), as A1111 does."""
    numbers = [int(m.group(1)) for name in os.listdir(folder) if (m := _LEADING_NUMBER.match(name))]
    return max(numbers, default=-1) + 1


class OutputWriter:
    """Writes numbered pictures (``format``: a key of FORMATS); the next number per folder is cached so a save does
    not rescan the folder."""

    def __init__(self, root: str | Path, enabled: bool = True, format: str = "png"):
        if format not in FORMATS:
            raise ValueError(f"unknown image format {format!r}; one of {', '.join(FORMATS)}")
        self.root = Path(root)
        self.enabled = enabled
        self.format = format
        self._lock = threading.Lock()
        self._next: dict[Path, int] = {}

    def _reserve(self, folder: Path, rescan: bool) -> int:
        """Hand out a number no other thread of this writer holds; rescan after another writer beat us to one."""
        with self._lock:
            number = self._next.get(folder, 0)
            if rescan or folder not in self._next:
                number = max(number, _next_number_on_disk(folder))
            self._next[folder] = number + 1
            return number

    def save(
        self,
        image: Image.Image,
        infotext: str,
        seed: int | None,
        category: str = "txt2img-images",
        when: datetime.date | None = None,
        **chunks: str,
    ) -> Path | None:
        """Save ``image`` with its infotext (and other text ``chunks``) and return the final path, or None when
        saving is disabled. The name is the next number, then the seed where there is one."""
        if not self.enabled:
            return None
        folder = self.root / category / (when or datetime.date.today()).isoformat()
        folder.mkdir(parents=True, exist_ok=True)

        suffix = f".{self.format}"
        fd, temp = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX, suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                self._write(f, image, infotext, chunks)
                f.flush()
                os.fsync(f.fileno())
            rescan = False
            while True:
                number = self._reserve(folder, rescan)
                final = folder / (f"{number:05d}{suffix}" if seed is None else f"{number:05d}-{seed}{suffix}")
                try:
                    os.link(temp, final)
                    return final
                except FileExistsError:
                    rescan = True  # someone else (another process, or a file added by hand) took that name
        finally:
            os.unlink(temp)

    def _write(self, file, image: Image.Image, infotext: str, chunks: dict[str, str]) -> None:
        if self.format == "png":
            image.save(file, format="PNG", pnginfo=png_metadata(infotext, **chunks))
        else:  # no alpha in a JPEG: pictures are RGB here anyway
            image.convert("RGB").save(file, format=FORMATS[self.format], quality=QUALITY, exif=exif_metadata(infotext))
