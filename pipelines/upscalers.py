"""Upscalers for hires fix, by A1111's names.

Latent upscalers resize the first pass's latents (the second pass then denoises them); pixel upscalers resize
decoded pictures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from .errors import RequestError

LATENT_UPSCALERS = {"Latent": "bilinear", "Latent (nearest)": "nearest", "Latent (bicubic)": "bicubic"}
PIXEL_UPSCALERS = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}


def upscaler_names() -> list[str]:
    return [*LATENT_UPSCALERS, *PIXEL_UPSCALERS]


def check_name(name: str) -> str:
    if name not in upscaler_names():
        raise RequestError(f"Unknown upscaler {name!r}. Choose one of: {', '.join(upscaler_names())}.", "hr_upscaler")
    return name


def is_latent(name: str) -> bool:
    return name in LATENT_UPSCALERS


def upscale_latents(latents: torch.Tensor, size: tuple[int, int], scale_factor: int, name: str) -> torch.Tensor:
    mode = LATENT_UPSCALERS[name]
    extra = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(latents, size=(size[1] // scale_factor, size[0] // scale_factor), mode=mode, **extra)


def upscale_images(images: list[Image.Image], size: tuple[int, int], name: str) -> list[Image.Image]:
    return [image.resize(size, PIXEL_UPSCALERS[name]) for image in images]
