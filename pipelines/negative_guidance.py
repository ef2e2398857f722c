"""A1111's settings that leave the negative prompt out of some UNet calls, guiding them by the prompt alone (the
prompted prediction handed to the pipeline in both halves of the CFG batch, whose guidance is then that
prediction) by leaving the unprompted half of the batch out: less UNet work, at a small change to the picture.

*Negative Guidance minimum sigma* (``s_min_uncond``, its Optimizations setting; infotext ``NGMS``): once the noise
level falls below it, every other call (A1111 counts its denoiser's calls and skips the odd ones; *all steps*,
``s_min_uncond_all``, every call). *Ignore negative prompt during early sampling* (``skip_early_cond``, its Sampler
parameters setting; infotext ``Skip Early CFG``): the calls of the first share of the pass, CFG off while the
picture's layout forms, for more varied pictures. The UNet's stand-in for the pass (``composable.ComposedUNet``)
counts the calls and asks ``skipping``.
"""

from __future__ import annotations

from .samplers import alpha_bar
from .script_settings import Setting

NGMS = Setting("s_min_uncond", "Negative Guidance minimum sigma", "NGMS", 0.0, 0.0, 15.0, 0.01,
               "0 = off; below this noise level every other step ignores the negative prompt: faster")
NGMS_ALL = "s_min_uncond_all"  # the request's field, A1111's option
NGMS_ALL_LABEL, NGMS_ALL_KEY = "Negative Guidance minimum sigma all steps", "NGMS all steps"
SKIP_EARLY = Setting("skip_early_cond", "Ignore negative prompt during early sampling", "Skip Early CFG", 0.0, 0.0,
                     1.0, 0.01, "0 = off; this share of the first steps ignores the negative prompt: more varied, "
                                "faster; 1 = every step")


def skipping(call: int, guidance, timestep) -> str | None:
    """The infotext key of the rule that leaves the unprompted half out of UNet call number ``call`` (from 0) of a
    pass whose ``guidance`` (``composable.Guidance``) sets them, or None: Skip Early CFG while the calls made are
    at most its share of the pass's calls, else NGMS on an odd call (any, with all steps) at a noise level
    (k-diffusion sigma) under its setting."""
    if guidance.skip_early and call / guidance.calls() <= guidance.skip_early:
        return SKIP_EARLY.key
    if not guidance.skip_below or (call % 2 == 0 and not guidance.skip_all):
        return None
    signal = alpha_bar(guidance.scheduler, timestep)
    return NGMS.key if ((1 - signal) / signal) ** 0.5 < guidance.skip_below else None
