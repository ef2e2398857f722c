"""FreeU (Si et al., 2023, "FreeU: Free Lunch in Diffusion U-Net"): on the UNet decoder's two deepest stages, the
backbone's features (the first half of their channels) are amplified by B1 and B2, and the skip connections' lowest
frequencies damped by S1 and S2, for more detail and less over-smoothing, with no training and little time. ComfyUI's
FreeU and FreeU_V2 nodes, Forge's *FreeU Integrated* and the sd-webui-freeu extension have it.

Version 1 is the paper's first (ComfyUI's FreeU node; diffusers' ``enable_freeu``, whose pictures Easel's equal);
version 2 (ComfyUI's FreeU_V2, Forge's) amplifies each place of the backbone by between 1 and B, by the place's mean
over the channels, scaled to 0..1 over the picture. As Forge's later script, FreeU acts only on the UNet calls from
its start to its end (shares of the pass, its first call 0 and its last 1). It is put on the pass's UNets as forward
pre-hooks on the two stages' resnets, whose input is the backbone and the skip connection side by side, and taken off
after, as the registry shares the UNets between requests. Defaults are the paper's for SDXL (ComfyUI's); for SD 1.x
its authors give B 1.5/1.6, S 0.9/0.2; the factors start above 0 (diffusers' rule: 0 turns its FreeU off). Kandinsky
2.2's decoder refuses it (``kandinsky.check_request``). A UNet compiled whole (``--compile-mode reduce-overhead``)
guards on the factors: each new set compiles it again.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from .script_settings import ForeignKeys, Setting, share_of

ENABLED = "FreeU"  # the infotext key, True when on; the settings follow under their own keys
SETTINGS = (
    Setting("freeu_b1", "B1", "FreeU B1", 1.3, 0.01, 2.0, 0.01, "backbone, deepest stage"),
    Setting("freeu_b2", "B2", "FreeU B2", 1.4, 0.01, 2.0, 0.01, "backbone, next stage"),
    Setting("freeu_s1", "S1", "FreeU S1", 0.9, 0.01, 4.0, 0.01, "skip, deepest stage"),
    Setting("freeu_s2", "S2", "FreeU S2", 0.2, 0.01, 4.0, 0.01, "skip, next stage"),
    Setting("freeu_start", "Start step", "FreeU start", 0.0, 0.0, 1.0, 0.01, "share of the steps"),
    Setting("freeu_end", "End step", "FreeU end", 1.0, 0.0, 1.0, 0.01, "share of the steps"),
    Setting("freeu_version", "Version", "FreeU version", 1, 1, 2, 1, "1: the paper's, ComfyUI's FreeU; 2: Forge's"),
)
VERSION = SETTINGS[-1]
# The factors (B1, B2, S1, S2) FreeU's authors give for each model, and Forge's defaults (its panel's presets)
PRESETS = {"SD 1.4": (1.3, 1.4, 0.9, 0.2), "SD 1.5": (1.5, 1.6, 0.9, 0.2), "SD 2.1": (1.4, 1.6, 0.9, 0.2),
           "SDXL": (1.3, 1.4, 0.9, 0.2), "Forge's default": (1.01, 1.02, 0.99, 0.95)}
# Forge's script writes its own keys (its FreeU is version 2), so its pictures read back
FORGE_KEYS = ForeignKeys("freeu_enabled", ("freeu_b1", "freeu_b2", "freeu_s1", "freeu_s2", "freeu_start", "freeu_end"),
                         SETTINGS[:6], ((ENABLED, "True"), (VERSION.key, "2")))


def amplified(backbone: torch.Tensor, factor: float, version: int) -> torch.Tensor:
    """The backbone's first half of channels amplified: by ``factor`` (version 1), or at each place by between 1 and
    ``factor`` as the place's channel mean lies between the picture's lowest and highest (version 2)."""
    half = backbone.shape[1] // 2
    scale: float | torch.Tensor = factor
    if version == 2:
        mean = backbone.mean(1, keepdim=True)
        low, high = mean.amin((2, 3), keepdim=True), mean.amax((2, 3), keepdim=True)
        scale = (factor - 1) * (mean - low) / (high - low).clamp_min(1e-12) + 1
    return torch.cat([backbone[:, :half] * scale, backbone[:, half:]], dim=1)


def _stage_hook(backbone_channels: int, factor: float, skip: float, version: int, active: Callable[[], bool]):
    """A resnet's forward pre-hook: its input, the backbone's ``backbone_channels`` then the skip connection's, with
    FreeU's change to each while ``active``."""
    from diffusers.utils.torch_utils import fourier_filter

    def hook(module, args):
        if not active():
            return None
        features, *rest = args
        backbone, connection = features[:, :backbone_channels], features[:, backbone_channels:]
        filtered = fourier_filter(connection, threshold=1, scale=skip)
        return (torch.cat([amplified(backbone, factor, version), filtered], dim=1), *rest)

    return hook


@contextmanager
def applied(unets: list, request, progress: Callable[[], tuple[int, int]]) -> Iterator[None]:
    """FreeU with the request's settings on ``unets`` while the pass runs, when the request asks for it;
    ``progress`` gives the step and the steps, for its start and end."""
    if not request.freeu:
        yield
        return

    def active() -> bool:
        step, steps = progress()
        return request.freeu_start <= share_of(step, steps) <= request.freeu_end

    stages = ((request.freeu_b1, request.freeu_s1), (request.freeu_b2, request.freeu_s2))
    handles = []
    for unet in unets:
        unet = getattr(unet, "_orig_mod", unet)  # a compiled UNet: its module
        channels = list(reversed(unet.config.block_out_channels))  # each up block's output, the deepest first
        for stage, (block, (factor, skip)) in enumerate(zip(unet.up_blocks, stages)):
            for index, resnet in enumerate(block.resnets):  # the backbone: the block's input, then its resnets'
                backbone = channels[max(stage - 1, 0)] if index == 0 else block.resnets[index - 1].out_channels
                hook = _stage_hook(backbone, factor, skip, request.freeu_version, active)
                handles.append(resnet.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
