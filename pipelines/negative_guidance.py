"""A1111's *Negative Guidance minimum sigma* (``s_min_uncond``, its Optimizations setting; infotext ``NGMS``): once
the noise level falls below it, every other UNet call skips the unprompted half of the CFG batch, so that call
guides by the prompt alone: up to a quarter of a picture's UNet work saved, at a small change to it. A1111 counts its
denoiser's calls and skips on the odd ones, here the UNet's stand-in for the pass (``composable.ComposedUNet``)
does, handing the pipeline the prompted prediction in both halves (whose guidance is then that prediction).
"""

from __future__ import annotations

from .samplers import alpha_bar
from .script_settings import Setting

NGMS = Setting("s_min_uncond", "Negative Guidance minimum sigma", "NGMS", 0.0, 0.0, 15.0, 0.01,
               "0 = off; below this noise level every other step ignores the negative prompt: faster")


def skips(call: int, sigma_below: float, scheduler, timestep) -> bool:
    """Whether UNet call number ``call`` (from 0) of a pass skips the unprompted half: an odd one at a noise level
    (k-diffusion sigma) under ``sigma_below``."""
    if not sigma_below or call % 2 == 0:
        return False
    signal = alpha_bar(scheduler, timestep)
    return ((1 - signal) / signal) ** 0.5 < sigma_below
