"""A1111's soft inpainting (its built-in extension since 1.8): the mask's grey levels are kept through sampling
instead of being rounded to "repaint" or "keep", so a blurred mask blends new content into the picture.

After each step the latents are mixed with the original picture's (noised to the step's level) by the mask raised to
a power that grows with the noise level (*Schedule bias*: how it grows; *Preservation strength*: its scale), so grey
places keep more of the original early and follow the prompt late; the mixed vectors keep a length between the two
(*Transition contrast boost*: how far the longer wins), as plain mixing would fade them. The picture is then laid
over the original through a mask of how much each place changed (*Difference threshold*: the change at which the
original is half shown; *Difference contrast*: how sharply; *Mask influence*: how much the painted mask biases it)
instead of through the painted mask.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter

from .latent_blend import LatentBlend
from .samplers import alpha_bar
from .script_settings import Setting

ENABLED = "Soft inpainting enabled"  # A1111's infotext key
# A1111's sliders, labels and help lines
SETTINGS = (
    Setting("soft_schedule_bias", "Schedule bias", "Soft inpainting schedule bias", 1.0, 0.0, 8.0, 0.1,
            "Shifts when preservation of original content occurs during denoising."),
    Setting("soft_preservation", "Preservation strength", "Soft inpainting preservation strength", 0.5, 0.0, 8.0,
            0.05, "How strongly partially masked content should be preserved."),
    Setting("soft_contrast_boost", "Transition contrast boost", "Soft inpainting transition contrast boost", 4.0, 1.0,
            32.0, 0.5, "Amplifies the contrast that may be lost in partially masked regions."),
    Setting("soft_mask_influence", "Mask influence", "Soft inpainting mask influence", 0.0, 0.0, 1.0, 0.05,
            "How strongly the original mask should bias the difference threshold."),
    Setting("soft_difference_threshold", "Difference threshold", "Soft inpainting difference threshold", 0.5, 0.0,
            8.0, 0.25, "How much an image region can change before the original pixels are not blended in anymore."),
    Setting("soft_difference_contrast", "Difference contrast", "Soft inpainting difference contrast", 2.0, 0.0, 8.0,
            0.25, "How sharp the transition should be between blended and not blended."),
)


def _sigma(scheduler, timestep) -> float:
    """The noise level of ``timestep`` as a k-diffusion sigma, for every scheduler (from its alphas)."""
    alpha = alpha_bar(scheduler, timestep)
    return ((1 - alpha) / alpha) ** 0.5


def keep_length(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, boost: float) -> torch.Tensor:
    """``a`` and ``b`` mixed by ``t`` (0: ``a``), each latent pixel's vector scaled to a length between theirs: the
    mean of their lengths to the power ``boost`` (1: linear; larger: nearer the longer one)."""
    t = t.double()
    mixed = a * (1 - t).to(a.dtype) + b * t.to(a.dtype)
    length_a, length_b, length = (x.double().norm(dim=1, keepdim=True) for x in (a, b, mixed))
    wanted = (length_a ** boost * (1 - t) + length_b ** boost * t) ** (1 / boost)
    return mixed * (wanted / (length + 1e-5)).to(mixed.dtype)


def _kernel(radius: int = 2, spread: float = 1.5) -> np.ndarray:
    """A Gaussian window of ``radius`` pixels each way, lowered so it reaches 0 one pixel past the radius."""
    offsets = np.arange(-radius, radius + 1)
    squared = offsets[:, None] ** 2 + offsets[None, :] ** 2
    edge = np.exp(-((radius + 1) ** 2) / spread**2)
    return np.clip((np.exp(-squared / spread**2) - edge) / (1 - edge), 0, None)


def percentile_filter(image: np.ndarray, low: float, high: float, min_width: float = 1.0) -> np.ndarray:
    """Each pixel's weighted mean of its neighbourhood's values between two weighted percentiles (``low`` to
    ``high`` of the window's weight, at least ``min_width`` of it): 0.9-1 is a soft maximum, 0.25-0.75 a soft
    median. The window is ``_kernel``'s, cut at the image's edges."""
    kernel = _kernel()
    radius = kernel.shape[0] // 2
    height, width = image.shape
    padded = np.pad(image.astype(np.float64), radius)
    inside = np.pad(np.ones_like(image, dtype=np.float64), radius)
    windows = [(padded[dy:dy + height, dx:dx + width], inside[dy:dy + height, dx:dx + width] * kernel[dy, dx])
               for dy in range(kernel.shape[0]) for dx in range(kernel.shape[1])]
    values = np.stack([value for value, _ in windows], axis=-1)
    weights = np.stack([weight for _, weight in windows], axis=-1)
    order = np.argsort(values, axis=-1, kind="stable")
    values, weights = np.take_along_axis(values, order, -1), np.take_along_axis(weights, order, -1)
    ends = np.cumsum(weights, axis=-1)
    starts, total = ends - weights, ends[..., -1:]
    bottom, top = total * low, total * high
    narrow = top - bottom < min_width
    middle = (bottom + top) / 2
    bottom = np.where(narrow, np.clip(middle - min_width / 2, 0, np.maximum(total - min_width, 0)), bottom)
    top = np.where(narrow, np.minimum(bottom + min_width, total), top)
    overlap = np.clip(np.minimum(top, ends) - np.maximum(bottom, starts), 0, None)
    summed = overlap.sum(axis=-1)
    return np.where(summed > 0, (values * overlap).sum(axis=-1) / np.where(summed > 0, summed, 1), 0)


def _smootherstep(x: np.ndarray) -> np.ndarray:
    return x * x * x * (x * (6 * x - 15) + 10)


class SoftBlend(LatentBlend):
    """The step blend of soft inpainting (``LatentBlend``'s place), then the masks the pictures are laid over the
    original through. ``request`` holds the settings (``SETTINGS``' fields)."""

    def __init__(self, original: torch.Tensor, mask: Image.Image, seeds: list[int], request,
                 region: tuple[int, int, int, int] | None = None):
        """``region``: the box of the picture that was denoised ("only masked"), None for all of it."""
        super().__init__(original, mask, seeds)
        self.region = region
        (self.bias, self.preservation, self.boost, self.influence, self.threshold,
         self.contrast) = (getattr(request, setting.field) for setting in SETTINGS)
        self.last: torch.Tensor | None = None  # the latents after the last step

    def __call__(self, scheduler, timestep, latents: torch.Tensor) -> torch.Tensor:
        power = _sigma(scheduler, timestep) ** self.bias * self.preservation
        mix = torch.where(self.mask > 0, self.mask.double() ** power, 0)  # unmasked: the original, whatever power
        self.last = keep_length(self.noised(scheduler, timestep), latents, mix, self.boost).to(latents.dtype)
        return self.last

    def overlay_masks(self, size: tuple[int, int]) -> list[Image.Image] | None:
        """Per picture, at ``size`` (the whole picture's): white where the picture changed enough from the original to
        be shown over it (A1111's pixel composite), black outside the region; None before any step ran."""
        if self.last is None:
            return None
        changes = (self.last - self.original).double().norm(dim=1).cpu().numpy()
        painted = self.mask[0, 0].double().clamp(0, 1).cpu().numpy()
        scale = 0.5 * (1 - self.influence) + (1 - painted ** (self.preservation / 2)) * self.influence
        half = self.threshold * scale / (1.00001 - scale)  # the change at which the original is half shown
        masks = []
        for change in changes:
            change = percentile_filter(percentile_filter(change, 0.9, 1.0), 0.25, 0.75)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(half > 0, change / np.where(half > 0, half, 1), np.where(change > 0, np.inf, 0))
                kept = _smootherstep(1 / (1 + ratio**self.contrast))
            shown = Image.fromarray(np.round(255 * (1 - kept)).astype(np.uint8))
            left, top, right, bottom = self.region or (0, 0, *size)
            mask = Image.new("L", size, 0)
            mask.paste(shown.resize((right - left, bottom - top), Image.LANCZOS).filter(ImageFilter.GaussianBlur(4)),
                       (left, top))
            masks.append(mask)
        return masks
