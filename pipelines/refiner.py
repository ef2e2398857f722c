"""The refiner (A1111's): another model takes over a sampling pass once a share of its steps is done.

The switch happens inside the pass (``conditioning.StepConditioning``), as A1111 swaps models inside its sampler:
the pipeline's UNet becomes the refiner's and the text conditioning the refiner's own encoding of the same prompts,
while the sampler goes on with its state (no noise is added again, as an img2img pass over the first model's picture
would). This works for any scheduler and any task pipeline of the SD and SDXL families. Here: which refiners can take
over, when, and the size ids of SDXL's refiner model (one text encoder, an aesthetic score in place of the target
size).
"""

from __future__ import annotations

import math

import torch

from .errors import RequestError

AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5  # A1111's sdxl_refiner_high/low_aesthetic_score


def _sdxl(pipe) -> bool:
    return hasattr(pipe, "text_encoder_2")


def _aesthetic(pipe) -> bool:
    return bool(pipe.config.get("requires_aesthetics_score", False))


def check(base, refiner) -> None:
    """Refuse a refiner whose latents or conditioning the model's pass cannot hand over to (``LoadedModel``s)."""
    a, b = base.pipe, refiner.pipe
    family = "SDXL" if _sdxl(a) else f"SD with {a.unet.config.cross_attention_dim}-wide text"
    same_text = _sdxl(a) == _sdxl(b) and (_sdxl(a) or a.unet.config.cross_attention_dim ==
                                          b.unet.config.cross_attention_dim)
    if not (base.shares_latents(refiner) and same_text):
        raise RequestError(f"{refiner.info.name} cannot refine {base.info.name}: a refiner must be of the same family "
                           f"({family}, the same latents); pick another refiner.", "refiner_checkpoint")


def switch_step(total: int, switch_at: float) -> int | None:
    """After how many of ``total`` steps the refiner takes over (A1111: once the done share reaches ``switch_at``);
    None when it never would."""
    done = max(1, math.ceil(total * switch_at - 1e-9))
    return done if done < total else None


def time_ids(refiner, ids: torch.Tensor, images: int, guided: bool) -> torch.Tensor:
    """The size ids the ``refiner`` pipeline's UNet reads, from those of the pass it takes over (``ids``): original
    size and crop as they were, then the aesthetic score (SDXL's refiner model: A1111's 6 and, for the negative
    half, 2.5) or the target size, which is the original size here."""
    kept = ids[:1, :4]
    if not _aesthetic(refiner):
        return torch.cat([kept, kept[:, :2]], dim=1).repeat(ids.shape[0], 1)
    scores = ([NEGATIVE_AESTHETIC_SCORE] * images if guided else []) + [AESTHETIC_SCORE] * images
    column = torch.tensor(scores, dtype=ids.dtype, device=ids.device)[:, None]
    return torch.cat([kept.repeat(len(scores), 1), column], dim=1)
