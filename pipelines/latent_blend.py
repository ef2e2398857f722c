"""Masked latent blending after each step, for inpainting where the pipeline does not do it as the mask asks:
Kandinsky's ordinary decoder (which has no inpainting loop) and soft inpainting (``soft_inpainting.SoftBlend``)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class LatentBlend:
    """After each step, the latents outside the mask are put back to the original picture's, noised to the next
    step's level with each image's own seeded noise; the mask's grey levels mix the two."""

    def __init__(self, original: torch.Tensor, mask: Image.Image, seeds: list[int]):
        """``original``: the picture's latents (one, or one per seed); ``mask``: white repaints, at any size."""
        self.original = original
        height, width = original.shape[-2:]
        mask = np.asarray(mask.convert("L").resize((width, height), Image.BILINEAR), dtype=np.float32) / 255
        self.mask = torch.from_numpy(mask)[None, None].to(original.device, original.dtype)
        noise = [torch.randn(original.shape[1:], generator=torch.Generator("cpu").manual_seed(seed)) for seed in seeds]
        self.noise = torch.stack(noise).to(original.device, original.dtype)

    def noised(self, scheduler, timestep) -> torch.Tensor:
        """The original at the level of the latents after the step at ``timestep`` (itself after the last)."""
        later = scheduler.timesteps[scheduler.timesteps < timestep]
        return scheduler.add_noise(self.original, self.noise, later[:1]) if len(later) else self.original

    def __call__(self, scheduler, timestep, latents: torch.Tensor) -> torch.Tensor:
        return self.mask * latents + (1 - self.mask) * self.noised(scheduler, timestep)
