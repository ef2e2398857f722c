"""Rescale CFG (Lin et al., 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", section 3.4):
a high CFG scale inflates the spread of the guided prediction and over-exposes the picture; rescaling it to the
spread of the prompted prediction, mixed back by the factor (0.7 in the paper), keeps the colours. ComfyUI's
RescaleCFG node, Forge's *Rescale CFG* and InvokeAI's *CFG Rescale Multiplier* have it.

The paper rescales v-predictions, and so does ComfyUI (and Forge, its port) whatever the model predicts; diffusers'
``guidance_rescale`` rescales the model's own output, which for an epsilon model (SD 1.x, SDXL) barely changes a
picture (on the embedded model at CFG 25 it kept red in 1 of 4 seeds, this rule in 5 of 6). Here, as in ComfyUI, an epsilon prediction
is turned into a v-prediction at the step's noise level, rescaled, and turned back; for a v-prediction model it is
diffusers' rule exactly. With ``u`` and ``c`` the unprompted and prompted v-predictions, the pipeline's guidance by
``g = u + scale x (c - u)`` becomes ``g x k`` with ``k = phi x std(c) / std(g) + 1 - phi`` per picture; as the
conversions are affine and CFG's weights add up to 1, handing the pipeline ``u x k`` and ``c x k`` (converted back)
makes exactly that. ``composable.ComposedUNet`` does so for every UNet pipeline (img2img, inpainting, ControlNet,
composable prompts included).
"""

from __future__ import annotations

import torch

from .samplers import NoiseLevel
from .script_settings import Setting

RESCALE = Setting("rescale_cfg", "Rescale CFG", "Rescale CFG", 0.0, 0.0, 1.0, 0.05, "0 = off; 0.7 at a high CFG")


def rescaled(out: torch.Tensor, sample: torch.Tensor, timestep, images: int, phi: float, scale: float,
             scheduler) -> torch.Tensor:
    """A CFG batch's predictions ``out`` (``[unprompted, prompted]``, ``images`` each) for the UNet's input
    ``sample`` (its first channels: the latents; an inpainting UNet's input has more) at ``timestep`` of
    ``scheduler``, scaled so that the pipeline's guidance by ``scale`` is rescaled by ``phi``; computed in float32."""
    predicted, level = out.float(), NoiseLevel.at(scheduler, timestep)
    v_prediction, a, b = level.v_prediction, level.signal, level.noise
    if v_prediction:
        v = predicted
    else:
        latents = sample[:, :out.shape[1]].float()
        v = (predicted - b * latents) / a  # the epsilon prediction as a v-prediction
    unprompted, prompted = v[:images], v[images:]
    guided = unprompted + scale * (prompted - unprompted)
    dims = list(range(1, out.ndim))
    factor = phi * prompted.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True) + 1 - phi
    v = v * factor.repeat(2, *[1] * len(dims))
    return (v if v_prediction else a * v + b * latents).to(out.dtype)
