"""The Extras tab (A1111's postprocessing): a picture upscaled outside any diffusion, by one upscaler, optionally
blended with a second one's.

As in A1111: the size is a scale (``upscaling_resize``) or a width and height, where *crop* keeps the aspect ratio
and cuts the rest from the middle; an upscaler file that enlarges less than asked runs again on its own output
(an x4 model asked for 8x runs twice), and every result is brought to the exact size with Lanczos. ``None`` leaves
the picture as it is. The picture keeps its own generation parameters; the postprocessing is written beside them
(A1111's ``postprocessing`` text chunk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from .errors import RequestError
from .infotext import format_infotext
from .upscalers import PIXEL_UPSCALERS, upscaler_files

NONE = "None"
RESIZE_MODES = ("Scale by", "Scale to")


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

    def __post_init__(self):
        if not (hasattr(self.image, "size") and hasattr(self.image, "convert")):
            raise RequestError("Extras needs a picture.", "image")
        if self.resize_mode not in (0, 1):
            raise RequestError(f"Resize mode must be 0 (scale by) or 1 (scale to), got {self.resize_mode!r}.",
                               "resize_mode")
        if not 1.0 <= float(self.upscaling_resize) <= 8.0:
            raise RequestError(f"Scale by must be between 1 and 8, got {self.upscaling_resize}.", "upscaling_resize")
        for field in ("upscaling_resize_w", "upscaling_resize_h"):
            if not 64 <= int(getattr(self, field)) <= 8192:
                raise RequestError(f"The size to scale to must be between 64 and 8192, got {getattr(self, field)}.",
                                   field)
        if not 0.0 <= float(self.extras_upscaler_2_visibility) <= 1.0:
            raise RequestError("Upscaler 2 visibility must be between 0 and 1.", "extras_upscaler_2_visibility")
        width, height = self.size
        if width * height > 8192 * 8192:
            raise RequestError(f"The upscaled size {width}x{height} is over 8192x8192 pixels.", "upscaling_resize")

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

    def infotext(self) -> str:
        """A1111's postprocessing text."""
        params = {"Postprocess upscale by": float(self.upscaling_resize) if self.resize_mode == 0 else None,
                  "Postprocess upscale to": "{}x{}".format(*self.size) if self.resize_mode == 1 else None,
                  "Postprocess crop to fit": self.upscaling_crop if self.resize_mode == 1 else None,
                  "Postprocess upscaler": self.upscaler_1,
                  "Postprocess upscaler 2": self.upscaler_2 if len(self.upscalers) > 1 else None}
        return format_infotext("", "", params).strip()
