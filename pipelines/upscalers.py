"""Upscalers for hires fix and the Extras tab, by A1111's names.

Latent upscalers resize the first pass's latents (the second pass then denoises them); pixel upscalers resize
decoded pictures; model upscalers run diffusers' SD x4 and latent x2 upscaler pipelines, prompt-guided, and are
offered when their weights are in ``models/upscalers/`` (asked for without them, they say where the files go);
upscaler files (ESRGAN, Real-ESRGAN, SwinIR, DAT, ... in A1111's ``models/ESRGAN`` and sibling folders, named by
their file) are read by spandrel, which knows those architectures from their weights and unpickles safely, and run
by tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ModelError, RequestError

NONE = "None"  # A1111's upscaler that leaves the picture as it is (Extras, SD upscale)
LATENT_UPSCALERS = {"Latent": "bilinear", "Latent (nearest)": "nearest", "Latent (bicubic)": "bicubic"}
PIXEL_UPSCALERS = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}
UPSCALER_DIR = "upscalers"
FILE_UPSCALER_DIRS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")  # A1111's folders of upscaler files


@dataclass(frozen=True)
class ModelUpscaler:
    folder: str  # under models/upscalers, a diffusers pipeline folder
    hub_id: str  # where its files come from
    factor: int


MODEL_UPSCALERS = {
    "SD x4": ModelUpscaler("stable-diffusion-x4-upscaler", "stabilityai/stable-diffusion-x4-upscaler", 4),
    "SD latent x2": ModelUpscaler("sd-x2-latent-upscaler", "stabilityai/sd-x2-latent-upscaler", 2),
}


def upscaler_files(models_dir: str | Path) -> dict[str, Path]:
    """Upscaler files by name (the file's stem; the first folder's first), ``.pth`` or ``.safetensors``."""
    found: dict[str, Path] = {}
    for folder in FILE_UPSCALER_DIRS:
        root = Path(models_dir) / folder
        for path in sorted(root.iterdir()) if root.is_dir() else ():
            if path.is_file() and path.suffix.lower() in (".pth", ".safetensors"):
                found.setdefault(path.stem, path)
    return found


def upscaler_names(models_dir: str | Path | None = None) -> list[str]:
    """Every upscaler that can run: with ``models_dir``, the model upscalers whose weights are there and the upscaler
    files too."""
    if models_dir is None:
        return [*LATENT_UPSCALERS, *PIXEL_UPSCALERS]
    present = [name for name in MODEL_UPSCALERS if model_folder(models_dir, name) is not None]
    return [*LATENT_UPSCALERS, *PIXEL_UPSCALERS, *present, *upscaler_files(models_dir)]


def hires_names(models_dir: str | Path) -> list[str]:
    """What hires fix accepts: every upscaler, a model upscaler without its weights too (using it says where they
    go)."""
    return list(dict.fromkeys([*upscaler_names(models_dir), *MODEL_UPSCALERS]))


def check_name(name: str, known: list[str], field: str) -> str:
    """``name`` when it is one of the ``known`` upscalers; else a message listing them."""
    if name not in known:
        raise RequestError(f"Unknown upscaler {name!r}. Choose one of: {', '.join(known)}.", field)
    return name


def _descriptor(path: Path):
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_file(path)
    except Exception as exc:  # unknown architecture, a pickle that would run code, a broken file
        raise ModelError(f"Could not read the upscaler {path.name}: {exc}") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose != "SR":
        raise ModelError(f"{path.name} is not an upscaler (spandrel reads it as {descriptor.architecture.name}, "
                         f"{getattr(descriptor, 'purpose', 'not an image model')}).")
    return descriptor


class ImageUpscaler(torch.nn.Module):
    """An upscaler file as the registry holds models: a module (it moves, its bytes are counted) that upscales
    pictures by tiles, each with a margin of context around it that is cut off again, so tiles meet without seams
    while memory stays bounded."""

    TILE, MARGIN = 256, 16

    def __init__(self, path: Path):
        super().__init__()
        descriptor = _descriptor(path)
        self.net = descriptor.model  # the descriptor's module: moving this moves it
        self.descriptor, self.scale = descriptor, descriptor.scale

    @torch.no_grad()
    def upscale(self, image: Image.Image) -> Image.Image:
        weight = next(self.net.parameters())
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255)
        x = pixels.permute(2, 0, 1)[None].to(weight.device, weight.dtype)
        height, width, s = x.shape[2], x.shape[3], self.scale
        out = torch.zeros(1, 3, height * s, width * s, dtype=x.dtype, device=x.device)
        for top in range(0, height, self.TILE):
            for left in range(0, width, self.TILE):
                bottom, right = min(top + self.TILE, height), min(left + self.TILE, width)
                y0, x0 = max(top - self.MARGIN, 0), max(left - self.MARGIN, 0)
                y1, x1 = min(bottom + self.MARGIN, height), min(right + self.MARGIN, width)
                tile = self.descriptor(x[..., y0:y1, x0:x1])
                out[..., top * s:bottom * s, left * s:right * s] = \
                    tile[..., (top - y0) * s:(bottom - y0) * s, (left - x0) * s:(right - x0) * s]
        array = (out[0].permute(1, 2, 0).float().clamp(0, 1) * 255).round().byte().cpu().numpy()
        return Image.fromarray(array)


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
