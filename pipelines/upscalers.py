"""Upscalers for hires fix, by A1111's names.

Latent upscalers resize the first pass's latents (the second pass then denoises them); pixel upscalers resize
decoded pictures; model upscalers run diffusers' SD x4 and latent x2 upscaler pipelines, prompt-guided, and are
offered when their weights are in ``models/upscalers/`` (asked for without them, they say where the files go).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ModelError, RequestError

LATENT_UPSCALERS = {"Latent": "bilinear", "Latent (nearest)": "nearest", "Latent (bicubic)": "bicubic"}
PIXEL_UPSCALERS = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}
UPSCALER_DIR = "upscalers"


@dataclass(frozen=True)
class ModelUpscaler:
    folder: str  # under models/upscalers, a diffusers pipeline folder
    hub_id: str  # where its files come from
    factor: int


MODEL_UPSCALERS = {
    "SD x4": ModelUpscaler("stable-diffusion-x4-upscaler", "stabilityai/stable-diffusion-x4-upscaler", 4),
    "SD latent x2": ModelUpscaler("sd-x2-latent-upscaler", "stabilityai/sd-x2-latent-upscaler", 2),
}


def upscaler_names(models_dir: str | Path | None = None) -> list[str]:
    """Every upscaler that can run: with ``models_dir``, the model upscalers whose weights are there too."""
    present = [name for name in MODEL_UPSCALERS if models_dir and model_folder(models_dir, name) is not None]
    return [*LATENT_UPSCALERS, *PIXEL_UPSCALERS, *present]


def check_name(name: str) -> str:
    known = [*LATENT_UPSCALERS, *PIXEL_UPSCALERS, *MODEL_UPSCALERS]
    if name not in known:
        raise RequestError(f"Unknown upscaler {name!r}. Choose one of: {', '.join(known)}.", "hr_upscaler")
    return name


def model_folder(models_dir: str | Path, name: str) -> Path | None:
    folder = Path(models_dir) / UPSCALER_DIR / MODEL_UPSCALERS[name].folder
    return folder if (folder / "model_index.json").is_file() else None


def require_model_folder(models_dir: str | Path, name: str) -> Path:
    folder = model_folder(models_dir, name)
    if folder is None:
        spec = MODEL_UPSCALERS[name]
        raise ModelError(f"The {name} upscaler needs its weights: put the diffusers folder of {spec.hub_id} at "
                         f"{Path(models_dir) / UPSCALER_DIR / spec.folder}, or choose Latent or Lanczos.")
    return folder


def is_latent(name: str) -> bool:
    return name in LATENT_UPSCALERS


def upscale_latents(latents: torch.Tensor, size: tuple[int, int], scale_factor: int, name: str) -> torch.Tensor:
    mode = LATENT_UPSCALERS[name]
    extra = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(latents, size=(size[1] // scale_factor, size[0] // scale_factor), mode=mode, **extra)


def upscale_images(images: list[Image.Image], size: tuple[int, int], name: str) -> list[Image.Image]:
    """Pixel upscaling to ``size`` (model upscalers' output is brought to the exact size this way too)."""
    return [image.resize(size, PIXEL_UPSCALERS.get(name, Image.LANCZOS)) for image in images]
