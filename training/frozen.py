"""A frozen Stable Diffusion pipeline as the adapter trainers use it (ControlNet, textual inversion, a distilled
student): pictures to latents, captions to text states, and noised latents at random timesteps, each drawn from
the step's own generator in that order, so a run is the same run every time."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipelines.diffusion_loss import noised, target, training_schedule


def step_random(name: str, seed: int, step: int) -> tuple[random.Random, torch.Generator]:
    """The Python and torch generators of one training step."""
    return random.Random(f"{name}/{seed}/{step}"), torch.Generator().manual_seed(seed * 1_000_003 + step)


def pixels(pictures: list[Image.Image], low: float = -1.0) -> torch.Tensor:
    """Pictures as a batch in [low, 1]: the VAE takes [-1, 1], ControlNet conditions [0, 1]."""
    array = np.stack([np.asarray(p.convert("RGB"), dtype=np.float32) for p in pictures])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / (255 / (1 - low)) + low


class FrozenPipeline:
    """A StableDiffusionPipeline in float32 with every module frozen, and its schedule seen as at training time."""

    def __init__(self, model: Path):
        from diffusers import StableDiffusionPipeline

        self.pipe = StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32)
        for module in (self.pipe.vae, self.pipe.text_encoder, self.pipe.unet):
            module.requires_grad_(False)
        self.schedule = training_schedule(self.pipe.scheduler.config)

    @torch.no_grad()
    def latents(self, pictures: list[Image.Image], g: torch.Generator) -> torch.Tensor:
        vae = self.pipe.vae
        return vae.encode(pixels(pictures)).latent_dist.sample(generator=g) * vae.config.scaling_factor

    def text(self, texts: list[str]) -> torch.Tensor:
        """The text encoder's states (with gradients only where an adapter hooks into it)."""
        ids = self.pipe.tokenizer(texts, padding="max_length", max_length=77, truncation=True,
                                  return_tensors="pt").input_ids
        return self.pipe.text_encoder(ids)[0]

    def noised(self, latents: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy latents, the noise, the timesteps) for a batch."""
        return noised(self.schedule, latents, g)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet predicts: the noise, or the velocity for v-prediction models."""
        return target(self.schedule, latents, noise, t)
