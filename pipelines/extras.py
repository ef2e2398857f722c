"""The Extras tab (A1111's postprocessing): a picture upscaled outside any diffusion, by one upscaler, optionally
blended with a second one's, then split, cropped and flipped as a training set needs (``postprocessing``).

As in A1111: the size is a scale (``upscaling_resize``) or a width and height, where *crop* keeps the aspect ratio
and cuts the rest from the middle; an upscaler file that enlarges less than asked runs again on its own output
(an x4 model asked for 8x runs twice), and every result is brought to the exact size with Lanczos. ``None`` leaves
the picture as it is. The picture keeps its own generation parameters; the postprocessing is written beside them
(A1111's ``postprocessing`` text chunk).

A batch (A1111's *Batch Process* and *Batch from Directory*) is a request per picture (``sources``), each with its
file's name, which names its results when ``use_original_name_batch`` is on, and its caption (the ``.txt`` beside
it), written beside each result so that the folder stays a captioned training set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from PIL import Image, UnidentifiedImageError

from . import postprocessing
from .errors import RequestError
from .infotext import format_infotext
from .postprocessing import FLIPS, OBJECTIVES
from .request import number_between, whole_between
from .upscalers import NONE, PIXEL_UPSCALERS, upscaler_files

RESIZE_MODES = ("Scale by", "Scale to")
CATEGORY = "extras-images"  # A1111's outdir_extras_samples
# the operations' numbers: field -> (label, lowest, highest), A1111's sliders
_NUMBERS = {"split_threshold": ("Threshold", 0.0, 1.0), "overlap_ratio": ("Overlap ratio", 0.0, 0.9),
            "focal_crop_entropy_weight": ("Focal point entropy weight", 0.0, 1.0),
            "focal_crop_edges_weight": ("Focal point edges weight", 0.0, 1.0),
            "multicrop_threshold": ("Error threshold", 0.0, 1.0)}
_WHOLE = {"multicrop_mindim": ("Dimension lower bound", 64, 2048),
          "multicrop_maxdim": ("Dimension upper bound", 64, 2048),
          "multicrop_minarea": ("Area lower bound", 64 * 64, 2048 * 2048),
          "multicrop_maxarea": ("Area upper bound", 64 * 64, 2048 * 2048)}


def names(models_dir) -> list[str]:
    """The upscalers Extras offers: none, pixel resizes and upscaler files (latent and prompt-guided model upscalers
    belong to hires fix)."""
    return [NONE, *PIXEL_UPSCALERS, *upscaler_files(models_dir)]


@dataclass(frozen=True)
class ExtrasRequest:
    image: Any  # PIL image
    resize_mode: int = 0  # index into RESIZE_MODES
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = NONE
    upscaler_2: str = NONE
    extras_upscaler_2_visibility: float = 0.0
    split_oversized: bool = False  # A1111's "Split oversized images"
    split_threshold: float = 0.5
    overlap_ratio: float = 0.2
    focal_crop: bool = False  # "Auto focal point crop"
    focal_crop_entropy_weight: float = 0.15
    focal_crop_edges_weight: float = 0.5
    focal_crop_debug: bool = False
    autosized_crop: bool = False  # "Auto-sized crop"
    multicrop_mindim: int = 384
    multicrop_maxdim: int = 768
    multicrop_minarea: int = 64 * 64
    multicrop_maxarea: int = 640 * 640
    multicrop_objective: str = OBJECTIVES[0]
    multicrop_threshold: float = 0.1
    flipped_copies: bool = False  # "Create flipped copies"
    flip_options: tuple = (FLIPS[0],)
    image_name: str = ""  # the picture's file name in a batch: its results' with use_original_name_batch
    caption: str = ""  # its caption in a batch, written beside each result
    output_dir: str = ""  # a folder inside the outputs folder (Batch from Directory's); empty: CATEGORY

    def __post_init__(self):
        if not (hasattr(self.image, "size") and hasattr(self.image, "convert")):
            raise RequestError("Extras needs a picture.", "image")
        if self.resize_mode not in (0, 1):
            raise RequestError(f"Resize mode must be 0 (scale by) or 1 (scale to), got {self.resize_mode!r}.",
                               "resize_mode")
        if not 1.0 <= float(self.upscaling_resize) <= 8.0:
            raise RequestError(f"Scale by must be between 1 and 8, got {self.upscaling_resize}.", "upscaling_resize")
        for key in ("upscaling_resize_w", "upscaling_resize_h"):
            if not 64 <= int(getattr(self, key)) <= 8192:
                raise RequestError(f"The size to scale to must be between 64 and 8192, got {getattr(self, key)}.",
                                   key)
        if not 0.0 <= float(self.extras_upscaler_2_visibility) <= 1.0:
            raise RequestError("Upscaler 2 visibility must be between 0 and 1.", "extras_upscaler_2_visibility")
        width, height = self.size
        if width * height > 8192 * 8192:
            raise RequestError(f"The upscaled size {width}x{height} is over 8192x8192 pixels.", "upscaling_resize")
        set_ = object.__setattr__
        for key, (label, low, high) in _NUMBERS.items():
            set_(self, key, number_between(getattr(self, key), label, key, low, high))
        for key, (label, low, high) in _WHOLE.items():
            set_(self, key, whole_between(getattr(self, key), label, key, low, high))
        for low, high in (("multicrop_mindim", "multicrop_maxdim"), ("multicrop_minarea", "multicrop_maxarea")):
            if getattr(self, low) > getattr(self, high):
                raise RequestError(f"{_WHOLE[low][0]} ({getattr(self, low)}) is above {_WHOLE[high][0].lower()} "
                                   f"({getattr(self, high)}).", low)
        if self.multicrop_objective not in OBJECTIVES:
            raise RequestError(f"Resizing objective must be one of {', '.join(OBJECTIVES)}, got "
                               f"{self.multicrop_objective!r}.", "multicrop_objective")
        flips = (self.flip_options,) if isinstance(self.flip_options, str) else tuple(self.flip_options or ())
        if unknown := [flip for flip in flips if flip not in FLIPS]:
            raise RequestError(f"Flipped copies are {', '.join(FLIPS)}, got {', '.join(map(repr, unknown))}.",
                               "flip_options")
        set_(self, "flip_options", flips)
        folder = Path((self.output_dir or "").strip() or CATEGORY)
        if folder.is_absolute() or ".." in folder.parts:
            raise RequestError(f"The output directory {self.output_dir!r} must be a folder inside the outputs folder "
                               "(a relative path, as extras-images/set1).", "output_dir")
        set_(self, "output_dir", folder.as_posix())

    @property
    def size(self) -> tuple[int, int]:
        if self.resize_mode == 1:
            return int(self.upscaling_resize_w), int(self.upscaling_resize_h)
        return tuple(round(side * float(self.upscaling_resize)) for side in self.image.size)

    @property
    def upscalers(self) -> list[tuple[str, float]]:
        """(upscaler, share in the result) in the order they run."""
        second = float(self.extras_upscaler_2_visibility) if self.upscaler_2 != NONE else 0.0
        return [(self.upscaler_1, 1.0)] + ([(self.upscaler_2, second)] if second else [])

    def target(self, size: tuple[int, int]) -> tuple[int, int]:
        """What to make of a picture of ``size``: the asked size or (scale to, crop) the least size of the picture's
        own aspect that covers it."""
        width, height = self.size
        if self.resize_mode == 1 and self.upscaling_crop:
            ratio = max(width / size[0], height / size[1])
            return max(width, round(size[0] * ratio)), max(height, round(size[1] * ratio))
        return width, height

    def fit(self, image: Image.Image) -> Image.Image:
        """An upscaled picture at the asked size: brought to ``target``, then its middle cut out."""
        if image.size != self.target(image.size):
            image = image.resize(self.target(image.size), Image.LANCZOS)
        width, height = self.size
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return image.crop((left, top, left + width, top + height)) if image.size != self.size else image

    def operations(self, notes: list[str]) -> list[postprocessing.Operation]:
        """The operations after the upscale that are on, in the order they run, toward the upscale's target size
        (A1111's: *Scale to*'s, else the source's size times *Scale by*); ``notes`` gets what they leave undone."""
        target, made = self.size, []
        if self.split_oversized:
            made.append(postprocessing.split_oversized(target, self.split_threshold, self.overlap_ratio))
        if self.focal_crop:
            made.append(postprocessing.focal_crop(target, self.focal_crop_entropy_weight, self.focal_crop_edges_weight,
                                                  self.focal_crop_debug))
        if self.autosized_crop:
            made.append(postprocessing.autosized_crop(self.multicrop_mindim, self.multicrop_maxdim,
                                                      self.multicrop_minarea, self.multicrop_maxarea,
                                                      self.multicrop_objective, self.multicrop_threshold, notes))
        if self.flipped_copies and self.flip_options:
            made.append(postprocessing.flipped_copies(self.flip_options))
        return made

    def infotext(self) -> str:
        """A1111's postprocessing text."""
        params = {"Postprocess upscale by": float(self.upscaling_resize) if self.resize_mode == 0 else None,
                  "Postprocess upscale to": "{}x{}".format(*self.size) if self.resize_mode == 1 else None,
                  "Postprocess crop to fit": self.upscaling_crop if self.resize_mode == 1 else None,
                  "Postprocess upscaler": self.upscaler_1,
                  "Postprocess upscaler 2": self.upscaler_2 if len(self.upscalers) > 1 else None}
        return format_infotext("", "", params).strip()


@dataclass
class Postprocessed:
    """What an Extras request made: A1111's postprocessing text, the pictures, where each was saved (None: not
    saved) and what the operations left undone."""
    text: str
    images: list[Image.Image] = field(default_factory=list)
    paths: list[Path | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def sources(paths: Iterable[str | Path]) -> Iterator[tuple[Image.Image, str, str]]:
    """A batch's pictures, in order: each with its file name and its caption (the ``.txt`` beside it, or none);
    files that are not pictures are passed over, as A1111 does."""
    for path in map(Path, paths):
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            continue
        beside = path.with_suffix(".txt")
        caption = beside.read_text(encoding="utf-8", errors="replace").strip() if beside.is_file() else ""
        yield image, path.name, caption


def folder_files(folder: str) -> list[Path]:
    """The files of a server folder (Batch from Directory's input), sorted by name; a RequestError for no folder."""
    root = Path(folder.strip()).expanduser() if folder and folder.strip() else None
    if root is None or not root.is_dir():
        raise RequestError(f"The input directory {folder!r} is not a folder on the server.", "input_dir")
    return sorted(path for path in root.iterdir() if path.is_file())
