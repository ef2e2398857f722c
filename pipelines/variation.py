"""Variation seeds (A1111's): a txt2img picture's starting noise is its seed's noise turned towards another seed's
(the variation seed, ``subseed``) by ``subseed_strength``, spherically per latent pixel, so that small strengths
give small changes of the same picture and strength 1 the variation seed's own start.

The seed's noise is drawn from the very generators the pipeline then samples with, as the pipeline itself would
draw it, so the sampler's later noise (ancestral samplers) is the seed's as without a variation.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor


def slerp(t: float, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """From ``start`` (t=0) to ``end`` (t=1) along the great circle, for each latent pixel's channel vector."""
    cos = (start / start.norm(dim=1, keepdim=True) * end / end.norm(dim=1, keepdim=True)).sum(1, keepdim=True)
    if cos.mean() > 0.9995:  # nearly parallel: the straight line is as good and stays finite
        return (1 - t) * start + t * end
    angle = cos.clamp(-1, 1).acos()
    return (((1 - t) * angle).sin() * start + (t * angle).sin() * end) / angle.sin()


def starting_noise(pipe, request, seeds: list[int], generators: list[torch.Generator]) -> torch.Tensor:
    """The unscaled starting latents of a txt2img batch (diffusers' ``latents``) for ``seeds``."""
    shape = (1, pipe.unet.config.in_channels, request.height // pipe.vae_scale_factor,
             request.width // pipe.vae_scale_factor)
    noise = []
    for seed, generator in zip(seeds, generators):
        own = randn_tensor(shape, generator=generator, dtype=pipe.unet.dtype)  # as prepare_latents draws it
        other = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(request.subseed_for(seed)),
                             dtype=pipe.unet.dtype)
        noise.append(slerp(request.subseed_strength, own.float(), other.float()).to(pipe.unet.dtype))
    return torch.cat(noise)
