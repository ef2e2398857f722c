"""Self-Attention Guidance (Hong et al., 2023, "Improving Sample Quality of Diffusion Models Using Self-Attention
Guidance"): each step the places of the picture that the UNet's middle block attends to most are blurred in the
picture the step predicts, noised back to the step's level and predicted once more; the step's prediction is pushed
away from that one by the scale, so the detail those places carry is drawn more firmly. The A1111 extension
(sd-webui-sag), ComfyUI's SelfAttentionGuidance node, Forge's *SelfAttentionGuidance Integrated* and diffusers'
(deprecated) ``StableDiffusionSAGPipeline`` have it; the rule is theirs:

- the attention map is the first self-attention of the middle block's, in the call's unprompted rows (the prompted
  ones without CFG); a place is blurred where the attention all places pay it, averaged over the heads, is above the
  *mask threshold* (1 is the average);
- the blur is Gaussian, 9 latent pixels wide, of *blur sigma* (1 in the extension and diffusers, 2 in ComfyUI and
  Forge);
- the blurred picture is noised with the prediction's own noise and predicted with the same text; the push is
  ``scale x (prediction - degraded prediction)``, added after CFG (and after Rescale CFG and Dynamic
  Thresholding, as ComfyUI's post-CFG function).

``composable.ComposedUNet`` records the map in the call (``recording``) and makes the second call (``pushed``): one
more UNet call per step on the unprompted rows. Latents under 5 pixels a side are too small for the blur's padding;
their calls are left as they are, as ComfyUI leaves them.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .samplers import NoiseLevel
from .script_settings import ForeignKeys, Setting

SAG = Setting("sag_scale", "SAG scale", "SAG Guidance Scale", 0.0, -2.0, 5.0, 0.01, "0 = off; 0.5 to 0.75 is usual")
SAG_BLUR_SIGMA = Setting("sag_blur_sigma", "SAG blur sigma", "SAG Blur Sigma", 1.0, 0.1, 10.0, 0.01,
                         "the blur of the places attended to; ComfyUI's and Forge's is 2")
SAG_THRESHOLD = Setting("sag_threshold", "SAG mask threshold", "SAG Mask Threshold", 1.0, 0.0, 4.0, 0.01,
                        "blur the places attended to more than this; 1 = the average")
SAG_SETTINGS = (SAG, SAG_BLUR_SIGMA, SAG_THRESHOLD)
FORGE_KEYS = ForeignKeys("sag_enabled", ("sag_scale", "sag_blur_sigma", "sag_threshold"), SAG_SETTINGS)
KERNEL = 9  # the blur's width, in latent pixels (everyone's)


@dataclass(frozen=True)
class SelfAttentionGuidance:
    """SAG's settings, as the request's fields hold them (``request.sag``), and its rule."""
    scale: float
    blur_sigma: float = SAG_BLUR_SIGMA.default
    threshold: float = SAG_THRESHOLD.default

    def degraded(self, pictures: torch.Tensor, received: torch.Tensor) -> torch.Tensor:
        """``pictures`` (rows x channels x height x width) blurred where ``received`` (rows x the middle block's
        grid, its height x width) is above the threshold."""
        rows, _, height, width = pictures.shape
        grid = received.shape[1:]
        mask = (received > self.threshold).to(pictures.dtype).reshape(rows, 1, *grid)
        mask = F.interpolate(mask, (height, width))
        return _blurred(pictures, self.blur_sigma) * mask + pictures * (1 - mask)

    def pushed(self, out: torch.Tensor, sample: torch.Tensor, timestep, images: int, cfg_scale: float, scheduler,
               received: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """A call's predictions ``out`` (``[unprompted, prompted]``, ``images`` each, or the prompted alone) for the
        UNet's input ``sample`` (its first channels: the latents), with the push added to what the pipeline's
        guidance by ``cfg_scale`` makes; ``received`` is the attention map of the first ``images`` rows, and
        ``predict`` predicts those rows for another input."""
        latents = sample[:images, :out.shape[1]].float()
        if min(latents.shape[-2:]) <= KERNEL // 2:
            return out
        level = NoiseLevel.at(scheduler, timestep)
        pictures = level.denoised(out[:images].float(), latents)
        degraded = self.degraded(pictures, received)
        noised = latents + level.signal * (degraded - pictures)  # the degraded picture, with the same noise
        again = predict(torch.cat([noised.to(sample.dtype), sample[:images, out.shape[1]:]], dim=1))
        change = level.predicted(self.scale * (degraded - level.denoised(again.float(), noised)), 0.0)
        if out.shape[0] == images:
            return (out.float() + change).to(out.dtype)
        return torch.cat([out[:images], (out[images:].float() + change / cfg_scale).to(out.dtype)])


def _blurred(pictures: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of ``sigma``, ``KERNEL`` pixels wide, each channel by itself, the edges reflected."""
    half = KERNEL // 2
    weights = torch.exp(-0.5 * (torch.linspace(-half, half, KERNEL) / sigma) ** 2)
    weights = (weights / weights.sum()).to(pictures.device, pictures.dtype)
    channels = pictures.shape[1]
    kernel = torch.outer(weights, weights).expand(channels, 1, KERNEL, KERNEL)
    return F.conv2d(F.pad(pictures, [half] * 4, mode="reflect"), kernel, groups=channels)


def attention_layer(unet):
    """The layer whose map SAG reads: the first self-attention of the middle block (everyone's), or None where the
    UNet has none (KOALA-700M's middle block was cut)."""
    from .pag import self_attentions

    layers = self_attentions(unet)
    return layers[0] if layers else None


def grid(unet, height: int, width: int) -> tuple[int, int]:
    """The middle block's height and width for latents of ``height`` x ``width``: each downsampler halves them,
    rounding up."""
    for block in unet.down_blocks:
        if getattr(block, "downsamplers", None):
            height, width = -(-height // 2), -(-width // 2)
    return height, width


class _Recorder:
    """The layer's processor for one call: its own output, and, the first time, how much attention each place of
    the batch's first ``rows`` rows receives from all of them, averaged over the heads (``received``)."""

    def __init__(self, kept, rows: int):
        self.kept, self.rows = kept, rows
        self.received: torch.Tensor | None = None

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None, temb=None,
                 **kwargs) -> torch.Tensor:
        if self.received is None:
            self.received = _received(attn, hidden_states[:self.rows])
        return self.kept(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


def _received(attn, hidden_states: torch.Tensor) -> torch.Tensor:
    """The softmax attention map of ``attn`` on ``hidden_states`` (rows x places x channels), summed over the
    places attending and averaged over the heads, a head at a time (the map is places² per head), in float32."""
    rows, places, _ = hidden_states.shape

    def heads(projected: torch.Tensor) -> torch.Tensor:
        return projected.view(rows, places, attn.heads, -1).transpose(1, 2)

    query, key = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states))
    if attn.norm_q is not None:
        query, key = attn.norm_q(query), attn.norm_k(key)
    query, key = query.float(), key.float()
    total = query.new_zeros(rows, places)
    for head in range(attn.heads):
        total += (query[:, head] @ key[:, head].transpose(1, 2) * attn.scale).softmax(-1).sum(1)
    return total / attn.heads


@contextmanager
def recording(unet, rows: int, height: int, width: int) -> Iterator[Callable[[], torch.Tensor | None]]:
    """``unet`` for one call on latents of ``height`` x ``width`` that records the attention map SAG reads, of the
    batch's first ``rows`` rows; gives a function that returns it (rows x grid height x grid width), or None where
    the call did not reach the layer."""
    layer = attention_layer(unet)
    recorder = _Recorder(layer.processor, rows)
    layer.processor = recorder
    try:
        yield lambda: None if recorder.received is None else recorder.received.unflatten(1, grid(unet, height, width))
    finally:
        layer.processor = recorder.kept
