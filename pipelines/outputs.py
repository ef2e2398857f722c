"""Saving generated images the A1111 way: ``root/category/YYYY-MM-DD/NNNNN-SEED.png`` with the infotext inside.

The writer's settings are A1111's (``pipelines/config.py`` sets them): ``samples_format``, PNG with the infotext in
its ``parameters`` text chunk, or JPEG or WebP (at ``jpeg_quality``) with it in the EXIF UserComment, where A1111
puts it and PNG Info reads it back; ``samples_filename_pattern``, what follows the number in a picture's name
(``pipelines/filenames.py``; Extras' pictures are named by their number alone, grids ``grid-0000.png``, as A1111's);
``save_images_add_number``, the number at all (off, a name already taken gets ``-1``, ``-2``: never one over
another); ``save_to_dirs`` and ``directories_filename_pattern``, the folders under a category's (the date by default);
``enable_pnginfo``, the infotext inside the file at all; ``save_txt``, the infotext also in a ``.txt`` file of the
same name. What the Save and Zip buttons under a gallery
keep goes to ``root/log`` with A1111's ``log.csv`` (``SaveLog``).

A file, once written, is never overwritten and never seen half-written, even with several threads or
processes saving into the same folder: each image is fully written to a temp file first and then
hard-linked to its final name, and ``os.link`` fails atomically if that name is already taken.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import itertools
import os
import re
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from PIL import Image

from pipelines.filenames import DEFAULT, DEFAULT_UNSORTED, Naming, file_stem
from pipelines.infotext import exif_metadata, parse_infotext, png_metadata

_LEADING_NUMBER = re.compile(r"^(\d+)")
_TEMP_PREFIX = ".tmp-"  # starts with a dot, so it never counts as a numbered image
FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}  # A1111's samples_format: Pillow's name for each
QUALITY = 80  # A1111's jpeg_quality's default, for JPEG and WebP
DIRECTORY_PATTERN = "[date]"  # A1111's directories_filename_pattern's default


@contextlib.contextmanager
def _written(folder: Path, write: Callable[[BinaryIO], None]) -> Iterator[str]:
    """A temporary file in ``folder`` holding in full what ``write`` wrote, removed on leaving (its links stay)."""
    fd, temp = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        yield temp
    finally:
        os.unlink(temp)


def _linked(temp: str, path: Path) -> bool:
    """Whether ``temp`` now also has the name ``path``: False, and nothing written, when a file has it already."""
    try:
        os.link(temp, path)
        return True
    except FileExistsError:
        return False


def _next_number_on_disk(folder: Path, basename: str) -> int:
    """One past the highest number among the folder's files (0 when there are none), as A1111 does: the leading one,
    or the one after ``basename-`` (``grid-0004.png``)."""
    prefix = f"{basename}-" if basename else ""
    numbers = [int(m.group(1)) for name in os.listdir(folder)
               if name.startswith(prefix) and (m := _LEADING_NUMBER.match(name[len(prefix):]))]
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
        self.quality = QUALITY
        self.pattern = ""  # samples_filename_pattern: empty is [seed]
        self.save_to_dirs = True
        self.directory_pattern = DIRECTORY_PATTERN  # directories_filename_pattern: "/" nests folders
        self.save_txt = False
        self.pnginfo = True  # enable_pnginfo: the parameters in the file (PNG text, or JPEG's and WebP's EXIF)
        self.add_number = True  # save_images_add_number
        self._lock = threading.Lock()
        self._next: dict[tuple[Path, str], int] = {}

    def _reserve(self, folder: Path, basename: str, rescan: bool) -> int:
        """Hand out a number no other thread of this writer holds; rescan after another writer beat us to one."""
        key = (folder, basename)
        with self._lock:
            number = self._next.get(key, 0)
            if rescan or key not in self._next:
                number = max(number, _next_number_on_disk(folder, basename))
            self._next[key] = number + 1
            return number

    def save(
        self,
        image: Image.Image,
        infotext: str,
        seed: int | None,
        category: str = "txt2img-images",
        when: datetime.date | None = None,
        naming: Naming | None = None,
        basename: str = "",
        suffix: str = "",
        name: str | None = None,
        dirs: bool = True,
        text: str | None = None,
        **chunks: str,
    ) -> Path | None:
        """Save ``image`` with its infotext (and other text ``chunks``) and return the final path, or None when
        saving is disabled. The name is ``basename`` (A1111's ``grid``), the next number, then, where there is a seed,
        the file name pattern's text for the picture and the job it was made in (``naming``), then ``suffix``
        (A1111's ``-before-highres-fix``); or ``name`` and ``suffix`` without a number (A1111's forced file name:
        ``-1``, ``-2`` when taken). ``dirs`` off puts it in the category's folder itself (A1111's Extras). The
        ``.txt`` beside it holds ``text`` when given (a caption), else the infotext when ``save_txt`` is on."""
        if not self.enabled:
            return None
        pattern = self.pattern or (DEFAULT if self.save_to_dirs else DEFAULT_UNSORTED)
        named = name if name is not None else "" if seed is None else file_stem(pattern, infotext, seed,
                                                                                naming=naming, image=image)
        stem = named + suffix or None
        folder = self._folder(category, infotext, when, naming, image) if dirs else self.root / category
        path = self._place(folder, f".{self.format}", basename, stem,
                           lambda file: self._write(file, image, infotext, chunks), numbered=name is None)
        if text is not None or self.save_txt:
            content = (infotext if text is None else text).encode("utf-8")
            with _written(path.parent, lambda file: file.write(content)) as temp:
                _linked(temp, path.with_suffix(".txt"))  # a file of that name already: never written over
        return path

    def save_zip(self, files: list[Path], category: str) -> Path | None:
        """A zip of ``files`` (each under its own name), numbered as the pictures are (A1111's Zip button)."""
        if not self.enabled:
            return None

        def write(file) -> None:
            with zipfile.ZipFile(file, "w") as archive:
                for path in files:
                    archive.write(path, path.name)
        return self._place(self._folder(category, "", None), ".zip", "", None, write)

    def place(self, category: str, stem: str, extension: str, write: Callable[[BinaryIO], None]) -> Path:
        """Any other file (an embedding's copy in a training log) under ``category``, named and written as a picture
        is: never half-written, never over another."""
        return self._place(self.root / category, extension, "", stem, write)

    def _folder(self, category: str, infotext: str, when: datetime.date | None, naming: Naming | None = None,
                image: Image.Image | None = None) -> Path:
        """Where a file goes: its category's folder and, with ``save_to_dirs``, the directory pattern's folders under
        it, for the picture, its job and the day (``when``, else today); an empty pattern is A1111's
        [prompt_words]."""
        folder = self.root / category
        if self.save_to_dirs:
            now = datetime.datetime.combine(when, datetime.time()) if when else None
            for part in re.split(r"/(?![^\[]*\])", self.directory_pattern or "[prompt_words]"):  # not in [...]
                if part.strip() and (name := file_stem(part, infotext, now=now, naming=naming, image=image)):
                    folder /= name
        return folder

    def _names(self, folder: Path, extension: str, basename: str, stem: str | None,
               numbered: bool = True) -> Iterator[str]:
        """The names to try in turn, each after the one before was taken: the next number (after ``basename``, in
        four digits as A1111's) and ``stem``; or, without ``add_number`` (or ``numbered``), ``stem``, ``stem-1``,
        ..."""
        if stem and not (self.add_number and numbered):
            yield f"{stem}{extension}"
            yield from (f"{stem}-{count}{extension}" for count in itertools.count(1))
        rescan = False
        while True:
            number = self._reserve(folder, basename, rescan)
            name = f"{basename}-{number:04d}" if basename else f"{number:05d}"
            yield f"{name}-{stem}{extension}" if stem else f"{name}{extension}"
            rescan = True  # someone else (another process, or a file added by hand) took that name

    def _place(self, folder: Path, extension: str, basename: str, stem: str | None,
               write: Callable[[BinaryIO], None], numbered: bool = True) -> Path:
        """Write a file in full under a temporary name, then link it to the first free name: never half-written,
        never over another."""
        folder.mkdir(parents=True, exist_ok=True)
        with _written(folder, write) as temp:
            return next(folder / name for name in self._names(folder, extension, basename, stem, numbered)
                        if _linked(temp, folder / name))

    def _write(self, file, image: Image.Image, infotext: str, chunks: dict[str, str]) -> None:
        if not self.pnginfo:
            infotext, chunks = "", {}
        if self.format == "png":
            image.save(file, format="PNG", pnginfo=png_metadata(infotext, **chunks))
        else:  # no alpha in a JPEG: pictures are RGB here anyway
            image.convert("RGB").save(file, format=FORMATS[self.format], quality=self.quality,
                                      exif=exif_metadata(infotext))


LOG_COLUMNS = ("prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename", "negative_prompt",
               "sd_model_name", "sd_model_hash")  # A1111's log.csv


class SaveLog:
    """A1111's Save and Zip under a gallery: the pictures a user keeps, written even under ``--no-save`` (the user
    asked for them) into ``root/images`` (numbered as every output, never over another), a row per save in
    ``root/log.csv`` (A1111's columns, from the first picture's infotext) and, for Zip, a zip of them beside them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.writer = OutputWriter(root)  # its format and names as the settings say (Services.configure)
        self.csv = self.root / "log.csv"
        self._lock = threading.Lock()

    def keep(self, pictures: list[tuple[Image.Image, str]], make_zip: bool = False) -> list[Path]:
        """Save ``pictures`` (each with its infotext); the files written, the zip first."""
        paths = []
        for image, infotext in pictures:
            seed = parse_infotext(infotext)[2].get("Seed", "")
            paths.append(self.writer.save(image, infotext, int(seed) if seed.isdigit() else None, "images"))
        self._log(pictures[0][1], paths[0])
        return [self.writer.save_zip(paths, "images"), *paths] if make_zip else paths

    def _log(self, infotext: str, path: Path) -> None:
        prompt, negative, params = parse_infotext(infotext)
        width, _, height = params.get("Size", "").partition("x")
        row = [prompt, params.get("Seed", ""), width, height, params.get("Sampler", ""), params.get("CFG scale", ""),
               params.get("Steps", ""), path.relative_to(self.root).as_posix(), negative,
               params.get("Model", ""), params.get("Model hash", "")]
        with self._lock, open(self.csv, "a", newline="", encoding="utf-8") as file:
            out = csv.writer(file)
            if file.tell() == 0:
                out.writerow(LOG_COLUMNS)
            out.writerow(row)
