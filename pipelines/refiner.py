"""The refiner (A1111's): another model takes over a sampling pass once a share of its steps is done.

The switch happens inside the pass, in its step callback, as A1111 swaps models inside its sampler: the pipeline's
UNet becomes the refiner's and the text conditioning the refiner's own encoding of the same prompts, while the
sampler goes on with its state (no noise is added again, as an img2img pass over the first model's picture would).
This works for any scheduler and any task pipeline of the SD and SDXL families. SDXL's refiner model (one text
encoder, an aesthetic score in place of the target size) gets its size ids rebuilt, with A1111's aesthetic scores.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch

from .errors import RequestError
from .text_encoding import encode_prompts

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


class Switch:
    """Hands one pass over to ``refiner`` (a pipeline) in the step callback; ``restoring`` puts the pass's own
    UNet back afterwards. The refiner's prompts are encoded when the switch is made, inside the job's networks."""

    TENSORS = ("prompt_embeds", "add_text_embeds", "add_time_ids")

    def __init__(self, refiner, request, embeddings, images: int):
        self.refiner, self.images = refiner, images
        self.text = encode_prompts(refiner, request.prompt, request.negative_prompt, request.clip_skip, embeddings)
        self.switch_at = request.refiner_switch_at
        self.done = False

    def inputs(self, pipe) -> list[str]:
        """The callback tensors the switch replaces, as this pipeline names them."""
        return [name for name in self.TENSORS if name in pipe._callback_tensor_inputs]

    def due(self, step: int, total: int) -> bool:
        return not self.done and switch_step(total, self.switch_at) == step + 1

    def __call__(self, pipeline, tensors: dict) -> dict:
        """The UNet swapped, and the conditioning tensors the rest of the pass reads, built like the pipeline's:
        the negative half first when it guides (its rows are twice the images)."""
        self.done = True
        pipeline.unet = self.refiner.unet
        kwargs = self.text.kwargs
        guided = tensors["prompt_embeds"].shape[0] == 2 * self.images
        device = tensors["prompt_embeds"].device

        def rows(positive: torch.Tensor, negative: torch.Tensor, dtype) -> torch.Tensor:
            halves = ([negative] * self.images if guided else []) + [positive] * self.images
            return torch.cat(halves).to(device, dtype)

        new = {"prompt_embeds": rows(kwargs["prompt_embeds"], kwargs["negative_prompt_embeds"],
                                     tensors["prompt_embeds"].dtype)}
        if "add_time_ids" in tensors:
            new["add_text_embeds"] = rows(kwargs["pooled_prompt_embeds"], kwargs["negative_pooled_prompt_embeds"],
                                          tensors["add_text_embeds"].dtype)
            new["add_time_ids"] = self._time_ids(tensors["add_time_ids"], guided)
        return new

    def _time_ids(self, ids: torch.Tensor, guided: bool) -> torch.Tensor:
        """The refiner's size ids: original size and crop as the pass had them, then the aesthetic score (SDXL's
        refiner model) or the target size, which is the original size here."""
        kept = ids[:1, :4]
        if not _aesthetic(self.refiner):
            return torch.cat([kept, kept[:, :2]], dim=1).repeat(ids.shape[0], 1)
        scores = ([NEGATIVE_AESTHETIC_SCORE] * self.images if guided else []) + [AESTHETIC_SCORE] * self.images
        column = torch.tensor(scores, dtype=ids.dtype, device=ids.device)[:, None]
        return torch.cat([kept.repeat(len(scores), 1), column], dim=1)

    @contextmanager
    def restoring(self, pipe) -> Iterator[None]:
        unet = pipe.unet
        try:
            yield
        finally:
            if pipe.unet is not unet:
                pipe.unet = unet
