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

Rescale CFG (``cfg_rescale``) and Dynamic Thresholding (``dynamic_thresholding``) need the unprompted and prompted
predictions of each step too, PAG (``pag``) a second, perturbed, prediction, and A1111's negative guidance minimum
sigma and Skip Early CFG (``negative_guidance``) leave the unprompted one out of some calls, so ``ComposedUNet`` also
stands in for a pass with them (a text of one part is the UNet's own call): it adds PAG's push to the prompted
prediction it hands the pipeline, thresholds the guidance, then rescales both; Self-Attention Guidance (``sag``)
records the call's attention map and pushes the guided prediction from a second call's. With
Tiled Diffusion (``tiled_diffusion``) each call is made on tiles of the latents, a few to a UNet call, and their
predictions blended.
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from .cfg_rescale import rescaled
from .dynamic_thresholding import DynamicThresholding
from .negative_guidance import skipping
from .pag import perturbed, scale_at
from .regions import Area
from .sag import SelfAttentionGuidance, recording
from .script_settings import share_of
from .text_encoding import Parts
from .tiled_diffusion import SPATIAL, Tile, TiledDiffusion, window

Windows = tuple[list[Tile], int, int]  # the tiles of a UNet call and the height and width of the latents they cut


@dataclass(frozen=True)
class Guidance:
    """What a pass does to its guidance besides composable parts: Rescale CFG's factor (``rescale``), PAG's scale
    (``pag``, worn down by ``pag_attenuation`` and bounded by ``pag_span``: ``pag.scale_at``), A1111's negative
    guidance minimum sigma (``skip_below``, on every call below it: ``skip_all``) and Skip Early CFG (``skip_early``,
    a share of the pass's ``calls()``), with the pass's CFG ``scale`` and ``scheduler``; Tiled Diffusion's ``tiles``,
    Dynamic Thresholding (``thresholding``) and Self-Attention Guidance (``sag``)."""
    scheduler: Any = None
    scale: float = 1.0
    rescale: float = 0.0
    pag: float = 0.0
    pag_attenuation: float = 0.0
    pag_span: tuple[float, float] = (0.0, 1.0)
    skip_below: float = 0.0
    skip_all: bool = False
    skip_early: float = 0.0
    calls: Callable[[], int] | None = None
    tiles: TiledDiffusion | None = None
    thresholding: DynamicThresholding | None = None
    sag: SelfAttentionGuidance | None = None

    @property
    def active(self) -> bool:
        return bool(self.rescale or self.pag or self.skip_below or self.skip_early or self.tiles or self.thresholding
                    or self.sag)


class ComposedUNet:
    """The pipeline's UNet for a pass with composable parts or an active ``Guidance``. ``current`` gives the UNet and
    the parts of the next call (prompt editing and the refiner change them between steps); ``images`` is the batch's
    picture count. Any other attribute is the UNet's own."""

    def __init__(self, current: Callable[[], tuple[torch.nn.Module, Parts]], images: int,
                 guidance: Guidance = Guidance()):
        self._current, self._images, self._guidance, self._calls = current, images, guidance, 0
        self.skipped: Counter[str] = Counter()  # calls whose unprompted half was left out, by the rule's infotext key
        self.tiled = 0  # calls made on tiles (Tiled Diffusion)
        self.pag_pushed = 0  # calls PAG pushed

    def __getattr__(self, name: str):
        return getattr(self._current()[0], name)

    def __call__(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, *,
                 added_cond_kwargs: dict | None = None, return_dict: bool = True, **kwargs):
        unet, parts = self._current()
        guidance, batch = self._guidance, sample.shape[0]
        unprompted = batch - self._images  # the CFG half: 0 without CFG
        inputs = (sample, timestep, encoder_hidden_states, added_cond_kwargs, kwargs)
        skip = skipping(self._calls, guidance, timestep) if unprompted else None
        share = share_of(self._calls, guidance.calls()) if guidance.calls else 0.0
        pag = self._pag(share)
        self._calls += 1
        if skip:  # the prompted rows alone, their prediction then in both halves
            inputs, unprompted = _per_picture(inputs, batch, lambda t: t[unprompted:]), 0
            self.skipped[skip] += 1
        # SAG's attention map: of the call's first pictures, the unprompted ones (the prompted without them)
        with recording(unet, self._images, *sample.shape[-2:]) if guidance.sag else nullcontext(lambda: None) as map_:
            result = self._tiled(unet, parts, inputs, unprompted, pag)
        if skip:
            result = torch.cat([result, result])
        if unprompted and guidance.thresholding:
            result = guidance.thresholding.guided(result, sample, timestep, self._images, guidance.scale,
                                                  guidance.scheduler, share)
        if unprompted and guidance.rescale:
            result = rescaled(result, sample, timestep, self._images, guidance.rescale, guidance.scale,
                              guidance.scheduler)
        if (attention := map_()) is not None:
            result = guidance.sag.pushed(result, sample, timestep, self._images, guidance.scale, guidance.scheduler,
                                         attention, lambda again: self._again(unet, parts, inputs, unprompted, again))
        return UNet2DConditionOutput(sample=result) if return_dict else (result,)

    def _again(self, unet, parts: Parts, inputs: tuple, unprompted: int, sample: torch.Tensor) -> torch.Tensor:
        """SAG's second prediction: the call's first pictures (the unprompted ones, else the prompted ones, by their
        parts) predicted for ``sample`` with what the call gave them."""
        rows = _per_picture(inputs, inputs[0].shape[0], lambda t: t[:self._images])
        return self._predict(unet, () if unprompted else parts, (sample, *rows[1:]), 0, None)

    def _pag(self, share: float) -> float:
        """PAG's scale for the call about to be made, at ``share`` of the pass's calls (``pag.scale_at``)."""
        guidance = self._guidance
        if not guidance.pag:
            return 0.0
        scale = scale_at(guidance.pag, guidance.pag_attenuation, guidance.pag_span, share, self.pag_pushed)
        self.pag_pushed += bool(scale)
        return scale

    def _tiled(self, unet, parts: Parts, inputs: tuple, unprompted: int, pag: float) -> torch.Tensor:
        """``_pushed``'s predictions, with Tiled Diffusion made tile by tile and blended by the tiles' weights. The
        tiles of a batch are laid out as one batch of pictures: every tile's unprompted rows, then every tile's
        prompted rows."""
        tiles, sample = self._guidance.tiles, inputs[0]
        height, width = sample.shape[-2:]
        if tiles is None or len(tiles.tiles(height, width)) == 1:
            return self._pushed(unet, parts, inputs, unprompted, pag)
        self.tiled += 1
        batch = sample.shape[0]
        pictures, out, total = batch - unprompted, None, None
        for group in tiles.batches(height, width):
            count = len(group)

            def laid_out(value, spatial: bool = False):
                def change(rows: torch.Tensor) -> torch.Tensor:
                    cut = [window(rows, tile, height, width) if spatial else rows for tile in group]
                    return torch.cat([part[:unprompted] for part in cut] + [part[unprompted:] for part in cut])
                return _per_picture(value, batch, change)

            _, timestep, texts, added, kwargs = inputs
            tiled = (laid_out(sample, True), laid_out(timestep), laid_out(texts), laid_out(added),
                     {key: laid_out(value, key in SPATIAL) for key, value in kwargs.items()})
            result = self._pushed(unet, parts, tiled, unprompted * count, pag, (group, height, width)).float()
            if out is None:
                out = result.new_zeros(batch, result.shape[1], height, width)
                total = result.new_zeros(height, width)
            for index, tile in enumerate(group):
                rows = torch.cat([result[index * unprompted:(index + 1) * unprompted],
                                  result[count * unprompted + index * pictures:][:pictures]])
                weight = tiles.weight(tile, out.device)
                place = (..., slice(tile.top, tile.top + tile.height), slice(tile.left, tile.left + tile.width))
                out[place] += rows * weight
                total[place[1:]] += weight
        return (out / total).to(sample.dtype)

    def _pushed(self, unet, parts: Parts, inputs: tuple, unprompted: int, pag: float,
                windows: Windows | None = None) -> torch.Tensor:
        """The predictions for ``inputs`` (``_predict``; ``windows``: they are tiles), with PAG's push at the call's
        scale ``pag`` added to the prompted ones, divided by the CFG scale the pipeline's guidance multiplies it by."""
        if not pag:
            return self._predict(unet, parts, inputs, unprompted, windows)
        result, worse = self._with_perturbed(unet, parts, inputs, unprompted, windows)
        prompted = result[unprompted:]
        push = (prompted - worse) * (pag / self._guidance.scale if unprompted else pag)
        return torch.cat([result[:unprompted], prompted + push])

    def _with_perturbed(self, unet, parts: Parts, inputs: tuple, unprompted: int,
                        windows: Windows | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's predictions (``_predict``) and PAG's perturbed ones of its prompted rows: from the same call,
        the prompted rows again at the batch's end (as diffusers), or with parts from a call of their own (their
        combination reads the unprompted rows too)."""
        batch = inputs[0].shape[0]
        if parts:
            result = self._predict(unet, parts, inputs, unprompted, windows)
            with perturbed(unet, first=0):
                return result, self._predict(unet, parts, inputs, unprompted, windows)[unprompted:]
        with perturbed(unet, first=batch):
            both = self._predict(unet, parts, _per_picture(inputs, batch, lambda t: torch.cat([t, t[unprompted:]])),
                                 unprompted, windows)
        return both[:batch], both[batch:]

    def _predict(self, unet, parts: Parts, inputs: tuple, unprompted: int, windows: Windows | None) -> torch.Tensor:
        """The UNet's own output for the batch, or with parts ``[uncond, uncond + sum(weight_i x (cond_i -
        uncond))]`` (without CFG the weighted sum alone) from one UNet call on the repeated batch; ``windows``: the
        batch's prompted rows are tiles, in their order, each part's area cut to its tile."""
        sample, timestep, encoder_hidden_states, added_cond_kwargs, kwargs = inputs
        if not parts:
            return unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                        added_cond_kwargs=added_cond_kwargs, return_dict=False, **kwargs)[0]
        batch, count = sample.shape[0], len(parts)
        images = batch - unprompted

        def repeat(value):
            """A per-picture value: its unprompted half, then its prompted half once per part."""
            return _per_picture(value, batch, lambda t: torch.cat([t[:unprompted], *[t[unprompted:]] * count]))

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
        weights = _weights([part[0] for part in parts], out, windows)
        weights = weights.repeat_interleave(images // weights.shape[1], 1)
        combined = uncond + (weights * (conds - uncond)).sum(0) if unprompted else (weights * conds).sum(0)
        return torch.cat([uncond, combined])


def _per_picture(value, batch: int, change: Callable[[torch.Tensor], torch.Tensor]):
    """``value`` with ``change`` made to each of its tensors of one row per picture of the ``batch`` (in tuples,
    lists and dicts too: SDXL's added conditions, ControlNet's residuals)."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
        return change(value)
    if isinstance(value, tuple | list):
        return type(value)(_per_picture(item, batch, change) for item in value)
    if isinstance(value, dict):
        return {key: _per_picture(item, batch, change) for key, item in value.items()}
    return value


def _weights(weights: list, like: torch.Tensor, windows: Windows | None) -> torch.Tensor:
    """Each part's weight at every pixel of ``like``'s grid (parts x tiles x 1 x its grid): a number everywhere, an
    area's own map, on the whole grid or cut to each of the ``windows``' tiles."""
    height, width = like.shape[-2:]
    tiles, canvas = (windows[0], windows[1:]) if windows else ([None], (height, width))

    def on(weight, tile: Tile | None) -> torch.Tensor:
        if not isinstance(weight, Area):
            return torch.full((height, width), float(weight))
        whole = weight.map(*canvas)
        return whole if tile is None else window(whole, tile, *canvas)

    maps = torch.stack([torch.stack([on(weight, tile) for tile in tiles]) for weight in weights])
    return maps.unsqueeze(2).to(like.device, like.dtype)
