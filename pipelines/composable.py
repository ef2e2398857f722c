"""A1111's composable diffusion: ``a castle AND a dragon:0.7`` guides each step by every part of the prompt.

A1111 denoises the picture once per part and once without a prompt, and combines the predictions as
``uncond + scale x sum(weight_i x (cond_i - uncond))`` (Liu et al., 2022). Here the pipeline runs as usual on the
first part's text (``PromptEmbeds.kwargs``), and ``ComposedUNet`` stands in for its UNet during the pass: each call
runs the real UNet once, on a batch whose prompted half is repeated for each part with that part's encoding, and
hands the pipeline ``[uncond, uncond + sum(weight_i x (cond_i - uncond))]``; the pipeline's own CFG then makes A1111's
sum. Without CFG (scale 1, no unprompted half) it hands the weighted sum of the parts. Everything else the UNet is
given per picture (SDXL's added conditions, ControlNet's residuals) is repeated with the prompted half, so the
combination works in every UNet pipeline (txt2img, img2img, inpainting, ControlNet, the refiner's switch). A
part's weight may be a ``regions.Area`` (Regional Prompter): its weight at each latent pixel.

Rescale CFG (``cfg_rescale``) needs the unprompted and prompted predictions of each step too, so ``ComposedUNet``
also stands in for a pass with it (a text of one part is the UNet's own call) and rescales what it hands the pipeline.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from .cfg_rescale import Rescale
from .regions import Area
from .text_encoding import Parts


class ComposedUNet:
    """The pipeline's UNet for a pass with composable parts or Rescale CFG. ``current`` gives the UNet and the parts
    of the next call (prompt editing and the refiner change them between steps); ``images`` is the batch's picture
    count; ``rescale`` the pass's Rescale CFG, if any. Any other attribute is the UNet's own."""

    def __init__(self, current: Callable[[], tuple[torch.nn.Module, Parts]], images: int,
                 rescale: Rescale | None = None):
        self._current, self._images, self._rescale = current, images, rescale

    def __getattr__(self, name: str):
        return getattr(self._current()[0], name)

    def __call__(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, *,
                 added_cond_kwargs: dict | None = None, return_dict: bool = True, **kwargs):
        unet, parts = self._current()
        unprompted = sample.shape[0] - self._images  # the CFG half: 0 without CFG
        if parts:
            result = self._composed(unet, parts, unprompted, sample, timestep, encoder_hidden_states,
                                    added_cond_kwargs, kwargs)
        else:
            result = unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                          added_cond_kwargs=added_cond_kwargs, return_dict=False, **kwargs)[0]
        if self._rescale and unprompted:
            result = self._rescale(result, sample, timestep, self._images)
        return UNet2DConditionOutput(sample=result) if return_dict else (result,)

    def _composed(self, unet, parts: Parts, unprompted: int, sample: torch.Tensor, timestep,
                  encoder_hidden_states: torch.Tensor, added_cond_kwargs: dict | None, kwargs: dict) -> torch.Tensor:
        """``[uncond, uncond + sum(weight_i x (cond_i - uncond))]`` from one UNet call on the repeated batch."""
        batch, images, count = sample.shape[0], self._images, len(parts)

        def repeat(value):
            """A per-picture value: its unprompted half, then its prompted half once per part."""
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
                return torch.cat([value[:unprompted], *[value[unprompted:]] * count])
            if isinstance(value, tuple | list):
                return type(value)(repeat(item) for item in value)
            if isinstance(value, dict):
                return {key: repeat(item) for key, item in value.items()}
            return value

        def texts(negative: torch.Tensor, index: int) -> torch.Tensor:
            """The unprompted half as given, then each part's tensor (``index`` 1: embeds, 2: pooled) per picture."""
            prompted = [part[index].to(negative.device, negative.dtype).expand(images, *negative.shape[1:])
                        for part in parts]
            return torch.cat([negative[:unprompted], *prompted])

        added = repeat(added_cond_kwargs)
        if added and "text_embeds" in added:  # SDXL: each part's pooled embedding
            added["text_embeds"] = texts(added_cond_kwargs["text_embeds"], 2)
        out = unet(repeat(sample), repeat(timestep), encoder_hidden_states=texts(encoder_hidden_states, 1),
                   added_cond_kwargs=added, return_dict=False, **repeat(kwargs))[0]
        uncond, conds = out[:unprompted], out[unprompted:].unflatten(0, (count, images))
        weights = _weights([part[0] for part in parts], out).view(count, 1, 1, *out.shape[-2:])
        combined = uncond + (weights * (conds - uncond)).sum(0) if unprompted else (weights * conds).sum(0)
        return torch.cat([uncond, combined])


def _weights(weights: list, like: torch.Tensor) -> torch.Tensor:
    """Each part's weight at every pixel of ``like``'s grid: a number everywhere, an area's own map."""
    height, width = like.shape[-2:]
    maps = [weight.map(height, width) if isinstance(weight, Area) else torch.full((height, width), float(weight))
            for weight in weights]
    return torch.stack(maps).to(like.device, like.dtype)
