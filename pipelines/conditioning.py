"""What a sampling pass conditions on, step by step: A1111's prompt editing and the refiner's switch.

A prompt with ``[from:to:when]`` or ``[a|b]`` (``prompts.prompt_schedule``) means other texts at later steps; a
refiner means another UNet, with its own encoding of the texts, after its switch step. Both are one mechanism: the
pipeline is called with the first step's text, and the step callback, after each step, replaces what changes for
the next one (the UNet, and the conditioning tensors the denoising loop reads), built as the pipeline builds them.
Every text is encoded before the pass starts, for each model that will read it. A text of composable parts
(``a AND b:0.5``, or Regional Prompter's regions: ``regions.py``), Rescale CFG, PAG, SAG, NGMS, Skip Early CFG or
Tiled Diffusion put a ``composable.ComposedUNet`` in the pipeline's UNet's place for the pass, which reads the UNet and
the parts of the step from here.

Steps count the sampler steps this pass runs (an img2img pass: steps x denoising strength), so ``[a:b:0.5]`` is
half of what runs; A1111 counts img2img's against all its steps.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from .composable import ComposedUNet, Guidance
from .errors import RequestError
from .negative_guidance import NGMS, NGMS_ALL_KEY, SKIP_EARLY
from .pag import self_attentions
from .prompts import composable_parts, prompt_schedule
from .refiner import switch_step, time_ids
from .text_encoding import Parts, PromptEmbeds, encode_prompts
from .tiled_diffusion import KEY as TILED_KEY

TENSORS = ("prompt_embeds", "add_text_embeds", "add_time_ids")  # what the SD and SDXL loops read from a callback


def _texts(request, steps: int) -> list[tuple[int, str, str]]:
    """(last step, prompt, negative prompt) for the pass, both prompts' edits merged."""
    prompts, negatives = prompt_schedule(request.prompt, steps), prompt_schedule(request.negative_prompt, steps)
    ends = sorted({end for end, _ in prompts} | {end for end, _ in negatives})
    return [(end, next(t for e, t in prompts if e >= end), next(t for e, t in negatives if e >= end)) for end in ends]


class StepConditioning:
    """The conditioning of one pass of ``steps`` steps on ``pipe``; ``refiner`` (a loaded model) takes over at the
    request's switch. ``images`` is the batch's size."""

    def __init__(self, pipe, request, embeddings, images: int, steps: int, refiner=None):
        self.pipe, self.refiner, self.images, self.steps = pipe, refiner, images, steps
        self.switch_at = request.refiner_switch_at
        self.texts = _texts(request, steps)
        self.switch = switch_step(steps, request.refiner_switch_at) if refiner is not None else None
        models = [pipe] + ([refiner.pipe] if self.switch is not None else [])
        split = request.regions.parts if request.regions else composable_parts
        self.encoded: dict[tuple[int, int], PromptEmbeds] = {
            (m, t): encode_prompts(model, prompt, negative, request.clip_skip, embeddings, split)
            for m, model in enumerate(models) for t, (_, prompt, negative) in enumerate(self.texts)}
        self.now = (0, 0)  # (model, text) of the next step
        self.switched = False
        self.unets = [model.unet for model in models]
        self.guidance = Guidance(pipe.scheduler, request.cfg_scale, request.rescale_cfg, request.pag_scale,
                                 request.pag_attenuation, (request.pag_start, request.pag_end), request.s_min_uncond,
                                 request.s_min_uncond_all, request.skip_early_cond, lambda: pipe.num_timesteps,
                                 request.tiles, request.thresholding, request.sag)
        for scale, name, field in ((request.pag_scale, "PAG", "pag_scale"), (request.sag_scale, "SAG", "sag_scale")):
            if scale and not all(map(self_attentions, self.unets)):
                raise RequestError(f"{name} needs self-attention in the UNet's middle block, and this model has none "
                                   f"(KOALA-700M was distilled without that block): set {name} scale to 0.", field)
        self.stand_in = self.guidance.active or any(encoded.parts for encoded in self.encoded.values())
        self.composed: ComposedUNet | None = None  # the stand-in of the pass, once it began

    @property
    def first(self) -> PromptEmbeds:
        return self.encoded[0, 0]

    def record(self, extra_params: dict | None, warnings: list[str] | None) -> None:
        """Embeddings used (``TI hashes``) and refused, of every text the pass may read."""
        for text in self.encoded.values():
            text.record(extra_params, warnings)

    def ran(self) -> dict:
        """The infotext keys of what the pass did, as A1111 writes them once they happen: the refiner's switch, the
        unprompted half left out of a call (Skip Early CFG, NGMS) and a call made on tiles (Tiled Diffusion's
        settings)."""
        params = {"Refiner": self.refiner.title, "Refiner switch at": self.switch_at} if self.switched else {}
        skipped = self.composed.skipped if self.composed is not None else {}
        if SKIP_EARLY.key in skipped:
            params[SKIP_EARLY.key] = self.guidance.skip_early
        if NGMS.key in skipped:
            params[NGMS.key] = self.guidance.skip_below
            if self.guidance.skip_all:
                params[NGMS_ALL_KEY] = True
        if self.composed is not None and self.composed.tiled:
            params[TILED_KEY] = self.guidance.tiles.infotext()
        return params

    def inputs(self, pipe) -> list[str]:
        """The callback tensors to be handed (those this pipeline's loop reads back), when anything changes."""
        changes = len(self.texts) > 1 or self.switch is not None
        return [name for name in TENSORS if name in pipe._callback_tensor_inputs] if changes else []

    def _next(self, done: int) -> tuple[int, int]:
        text = next(t for t, (end, _, _) in enumerate(self.texts) if end > done)
        return int(self.switch is not None and done >= self.switch), text

    def after(self, pipeline, done: int, total: int, tensors: dict) -> dict:
        """The tensors (and UNet) for the step after ``done`` of the pipeline's ``total`` callbacks (second-order
        samplers make more than their steps); {} when nothing changes."""
        done = done * self.steps // total
        if done >= self.steps or (following := self._next(done)) == self.now:
            return {}
        (model, text), switching = following, following[0] != self.now[0]
        self.now = following
        if switching:
            if not self.stand_in:  # a ComposedUNet follows ``now`` itself
                pipeline.unet = self.refiner.pipe.unet
            self.switched = True
        kwargs = self.encoded[model, text].kwargs
        guided = tensors["prompt_embeds"].shape[0] == 2 * self.images
        device = tensors["prompt_embeds"].device

        def rows(positive: torch.Tensor, negative: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            halves = ([negative] * self.images if guided else []) + [positive] * self.images
            return torch.cat(halves).to(device, like.dtype)

        new = {"prompt_embeds": rows(kwargs["prompt_embeds"], kwargs["negative_prompt_embeds"],
                                     tensors["prompt_embeds"])}
        if "add_time_ids" in tensors:
            new["add_text_embeds"] = rows(kwargs["pooled_prompt_embeds"], kwargs["negative_pooled_prompt_embeds"],
                                          tensors["add_text_embeds"])
            if switching:
                new["add_time_ids"] = time_ids(self.refiner.pipe, tensors["add_time_ids"], self.images, guided)
        return new

    def current(self) -> tuple[torch.nn.Module, Parts]:
        """The UNet and the composable parts of the next UNet call."""
        return self.unets[self.now[0]], self.encoded[self.now].parts

    @contextmanager
    def restoring(self, pipe) -> Iterator[None]:
        """The pass's own UNet back on ``pipe`` after it, whatever happened; a ``ComposedUNet`` in its place
        during the pass when a text has composable parts or the pass's ``Guidance`` is active."""
        unet = pipe.unet
        if self.stand_in:
            pipe.unet = self.composed = ComposedUNet(self.current, self.images, self.guidance)
        try:
            yield
        finally:
            if pipe.unet is not unet:
                pipe.unet = unet
