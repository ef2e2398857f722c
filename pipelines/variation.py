"""A txt2img picture's starting noise when the request shapes it (A1111's variation seeds and seed resize).

Variation seeds: the seed's noise is turned towards another seed's (the variation seed, ``subseed``) by
``subseed_strength``, spherically per latent pixel, so that small strengths give small changes of the same picture
and strength 1 the variation seed's own start. Seed resize: the noise the seed gives at another size (``Resize seed
from``) is put in the middle of the picture's, so a picture keeps its composition when its size changes.

The seed's noise at the picture's size is drawn from the very generators the pipeline then samples with, as the
pipeline itself would draw it, so the sampler's later noise (ancestral samplers) is the seed's as without them.
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


def shapes_noise(request) -> bool:
    """Whether the request's starting noise is not simply its seed's."""
    return bool(request.subseed_strength or request.seed_resize_from)


def paste_centred(noise: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
    """``into`` with ``noise`` over its middle; where ``noise`` is the larger, its middle is what fits."""
    rows, columns = (min(a, b) for a, b in zip(noise.shape[-2:], into.shape[-2:]))
    top, left = ((into.shape[i] - size) // 2 for i, size in ((-2, rows), (-1, columns)))
    source_top, source_left = ((noise.shape[i] - size) // 2 for i, size in ((-2, rows), (-1, columns)))
    pasted = into.clone()
    pasted[..., top:top + rows, left:left + columns] = noise[..., source_top:source_top + rows,
                                                             source_left:source_left + columns]
    return pasted


def starting_noise(pipe, request, seeds: list[int], generators: list[torch.Generator]) -> torch.Tensor:
    """The unscaled starting latents of a txt2img batch (diffusers' ``latents``) for ``seeds``."""
    scale, dtype = pipe.vae_scale_factor, pipe.unet.dtype
    width, height = request.seed_resize_from or (request.width, request.height)
    shape = (1, pipe.unet.config.in_channels, request.height // scale, request.width // scale)
    source = (*shape[:2], height // scale, width // scale)

    def drawn(seed: int) -> torch.Tensor:
        return randn_tensor(source, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype).float()

    noise = []
    for seed, generator in zip(seeds, generators):
        own = randn_tensor(shape, generator=generator, dtype=dtype).float()  # as prepare_latents draws it
        start = drawn(seed) if request.seed_resize_from else own
        if request.subseed_strength:
            start = slerp(request.subseed_strength, start, drawn(request.subseed_for(seed)))
        noise.append((paste_centred(start, own) if request.seed_resize_from else start).to(dtype))
    return torch.cat(noise)
