"""FreeU (Si et al., 2023, "FreeU: Free Lunch in Diffusion U-Net"): on the UNet decoder's two deepest stages, the
backbone's features (the first half of their channels) are amplified by B1 and B2, and the skip connections' lowest
frequencies damped by S1 and S2, for more detail and less over-smoothing, with no training and little time. ComfyUI's
FreeU node, Forge's *FreeU Integrated* and the sd-webui-freeu extension have it.

The UNet's own implementation is diffusers' (``UNet2DConditionModel.enable_freeu``: the paper's first version,
ComfyUI's FreeU node; Forge's is its second, which scales the backbone by each place's normalised mean, so its
pictures differ), set on the pass's UNets for the pass and taken off after, as the registry shares them between
requests. Defaults are the paper's for SDXL (ComfyUI's); for SD 1.x its authors give B 1.5/1.6, S 0.9/0.2. diffusers
turns FreeU off where any factor is 0, so the sliders start above it, and has it only in SD's and SDXL's up blocks
(Kandinsky 2.2's decoder refuses it: ``kandinsky.check_request``). The factors are attributes of the up blocks, which
a UNet compiled whole (``--compile-mode reduce-overhead``) guards on: each new set of factors compiles it again.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from .script_settings import Setting

ENABLED = "FreeU"  # the infotext key, True when on; the factors follow under their own keys
SETTINGS = (
    Setting("freeu_b1", "B1", "FreeU B1", 1.3, 0.01, 2.0, 0.01, "backbone, deepest stage"),
    Setting("freeu_b2", "B2", "FreeU B2", 1.4, 0.01, 2.0, 0.01, "backbone, next stage"),
    Setting("freeu_s1", "S1", "FreeU S1", 0.9, 0.01, 4.0, 0.01, "skip, deepest stage"),
    Setting("freeu_s2", "S2", "FreeU S2", 0.2, 0.01, 4.0, 0.01, "skip, next stage"),
)


@contextmanager
def applied(unets: list, request) -> Iterator[None]:
    """FreeU with the request's factors on ``unets`` while the pass runs, when the request asks for it."""
    if not request.freeu:
        yield
        return
    factors = {setting.field.removeprefix("freeu_"): getattr(request, setting.field) for setting in SETTINGS}
    for unet in unets:
        unet.enable_freeu(**factors)
    try:
        yield
    finally:
        for unet in unets:
            unet.disable_freeu()
