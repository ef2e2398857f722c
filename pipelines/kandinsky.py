"""Kandinsky 2.2: what differs from Stable Diffusion, in one place.

A Kandinsky 2.2 model is two pipelines in one (diffusers' ``KandinskyV22CombinedPipeline``): a prior turns the
prompt into a CLIP image embedding, and a decoder (a UNet conditioned on that embedding, and the MoVQ
autoencoder) paints it. ``generate.run_pipeline`` runs both; this module holds the rules around them.

- **Prompt.** The prior's CLIP text encoder reads plain text (77 tokens). A1111's attention syntax cannot reach
  it the way it reaches SD's encoder (the prior consumes one pooled vector plus hidden states it re-derives
  itself), so ``(word:1.2)``, ``[word]`` and ``BREAK`` are stripped to their words and the result says so;
  composable parts (``a AND b``) are refused (image mixing combines prompts here).
- **Samplers.** The decoders never call ``scheduler.scale_model_input`` and pass ``generator`` to every
  ``scheduler.step``, so samplers whose scheduler scales the UNet's input by sigma (Euler, Euler a, LMS, Heun,
  DPM2, DPM2 a, DPM++ SDE) or takes no generator (PLMS, UniPC, DEIS) are refused (``drives_decoder``); DDPM (the
  model's own scheduler), DDIM, DPM++ 2M, DPM++ 2M SDE and LCM apply.
- **Image mixing.** ``MixItem``s (prompts and pictures with weights) go through the prior's ``interpolate``:
  their image embeddings are summed with those weights and the decoder paints the blend.
- **Inpainting** with the ordinary (4-channel) decoder is img2img plus masked latent blending after each step
  (``latent_blend.LatentBlend``), as SD's pipelines do for ordinary UNets; the engine's prepared mask and its exact
  composite of the unmasked pixels apply as for every model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .errors import ModelError, RequestError
from .prompts import BREAK, BREAK_WEIGHT, composable_parts, extract_networks, parse_prompt_attention
from .samplers import SAMPLERS, normalize

if TYPE_CHECKING:
    from .registry import ModelInfo
    from .request import GenerationRequest

FAMILY = "kandinsky22"
# The model card's settings; the prior's steps and guidance are diffusers' combined-pipeline defaults.
DEFAULTS = {"width": 768, "height": 768, "steps": 50, "cfg_scale": 4.0, "sampler": "DDPM", "scheduler": "Automatic"}
PRIOR_STEPS = 25
PRIOR_GUIDANCE = 4.0
MAX_MIX = 8
PLAIN_TEXT = ("Kandinsky 2.2 reads the prompt as plain text: attention weights like (word:1.2), [word] and BREAK "
              "were left out.")


def family_of(class_name: str) -> str | None:
    """``kandinsky22`` for a Kandinsky 2.2 pipeline class named in a model_index.json."""
    return FAMILY if class_name.startswith("KandinskyV22") else None


def layout_hint(folder: str) -> str:
    return (f"put a combined Kandinsky 2.2 folder at {folder} (decoder and prior in one: "
            "AutoPipelineForText2Image.from_pretrained('kandinsky-community/kandinsky-2-2-decoder')"
            f".save_pretrained('{folder}') where the Hub can be reached)")


def check_loaded(info: ModelInfo, pipe, folder: str) -> None:
    """Refuse a Kandinsky 2.2 pipeline that came without its prior (a decoder folder or Hub id on its own)."""
    name = type(pipe).__name__
    if family_of(name) and not hasattr(pipe, "prior_pipe"):
        raise ModelError(f"Model {info.name!r} is a {name} without its prior: {layout_hint(folder)}.")


@dataclass(frozen=True)
class MixItem:
    """One ingredient of an image mix: a prompt or a picture, and its weight."""

    prompt: str = ""
    image: Any = None  # PIL image
    weight: float = 1.0

    @classmethod
    def from_values(cls, value: Any, index: int) -> "MixItem":
        where = f"Image mix item {index + 1}"
        if isinstance(value, MixItem):
            return value
        if not isinstance(value, dict):
            raise RequestError(f"{where} must be {{'prompt': text}} or {{'image': picture}} with a 'weight'.", "mix")
        prompt, image = str(value.get("prompt") or "").strip(), value.get("image")
        if bool(prompt) == (image is not None):
            raise RequestError(f"{where} needs either a prompt or an image (exactly one of them).", "mix")
        if image is not None and not (hasattr(image, "size") and hasattr(image, "convert")):
            raise RequestError(f"{where}: the image must be a picture.", "mix")
        weight = value.get("weight", 1.0)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise RequestError(f"{where}: the weight must be a number, got {weight!r}.", "mix") from None
        if not np.isfinite(weight):
            raise RequestError(f"{where}: the weight must be a finite number, got {weight}.", "mix")
        return cls(prompt, image.convert("RGB") if image is not None else None, weight)



def mix_items(values: Any) -> tuple[MixItem, ...]:
    """A request's ``mix`` as validated items: at most ``MAX_MIX``, weights adding up to more than 0."""
    if not values:
        return ()
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise RequestError("Image mix must be a list of {prompt or image, weight} items.", "mix")
    items = tuple(MixItem.from_values(value, i) for i, value in enumerate(values))
    if len(items) > MAX_MIX:
        raise RequestError(f"Image mix takes at most {MAX_MIX} items, got {len(items)}.", "mix")
    if sum(item.weight for item in items) <= 0:
        raise RequestError("The image mix weights must add up to more than 0.", "mix")
    return items


def mix_infotext(items: tuple[MixItem, ...]) -> str:
    """The mix as the infotext records it, pictures numbered in order: ``a cat: 0.7, image 1: 0.3``."""
    labels, pictures = [], 0
    for item in items:
        pictures += item.image is not None
        label = f"image {pictures}" if item.image is not None else item.prompt.replace(",", " ").replace(":", " ")
        labels.append(f"{label}: {item.weight:g}")
    return ", ".join(labels)


def plain_prompt(text: str) -> tuple[str, bool]:
    """The prompt's words without A1111's attention syntax, and whether any weight or BREAK was dropped."""
    pieces = parse_prompt_attention(text)
    dropped = any(weight != 1.0 for _, weight in pieces)
    plain = "".join(" " if weight == BREAK_WEIGHT and piece == BREAK else piece for piece, weight in pieces)
    return " ".join(plain.split()), dropped


@lru_cache(maxsize=None)
def drives_decoder(sampler: str) -> bool:
    """Whether the sampler's scheduler can run in Kandinsky's decoder loops, which never divide the UNet's input
    by sigma (k-diffusion style schedulers expect it) and pass ``generator`` to every ``step``."""
    import diffusers

    cls = getattr(diffusers, SAMPLERS[sampler].scheduler_class)
    return float(cls().init_noise_sigma) == 1.0 and "generator" in inspect.signature(cls.step).parameters


def check_request(request: GenerationRequest, info: ModelInfo) -> None:
    """Refuse, with a sentence, what a request asks of a model family that cannot give it."""
    if info.family != FAMILY:
        if request.mix:
            raise RequestError(f"Image mixing needs a Kandinsky 2.2 model; {info.name} is not one.", "mix")
        return
    for sampler, schedule, fields in ((request.sampler, request.scheduler, ("sampler", "scheduler")),
                                      (request.hr_sampler_name, request.hr_scheduler, ("hr_sampler_name", ""))):
        if sampler and not drives_decoder(normalize(sampler, schedule or "Automatic", fields)[0]):
            usable = ", ".join(name for name in SAMPLERS if drives_decoder(name))
            raise RequestError(f"Sampler {sampler!r} cannot drive Kandinsky 2.2's decoder. Use one of: {usable}.",
                               fields[0])
    refusals = (
        (info.inpainting, "model", "Kandinsky 2.2 inpainting decoders are not supported yet; the ordinary decoder "
                                   "inpaints."),
        (request.enable_hr, "enable_hr", "Hires fix is not available for Kandinsky 2.2 models yet."),
        (request.refiner_checkpoint, "refiner_checkpoint", "A refiner is not available for Kandinsky 2.2 models."),
        (request.active_controls, "controlnets", "ControlNet units do not apply to Kandinsky 2.2 models."),
        (request.task == "img2img" and request.resize_mode == 3, "resize_mode",
         "Latent upscale resizing is not available for Kandinsky 2.2 models; pick another resize mode."),
        (request.task == "inpaint" and request.inpaint_full_res, "inpaint_full_res",
         "'Only masked' inpainting is not available for Kandinsky 2.2 models yet; inpaint the whole picture."),
        (extract_networks(request.prompt)[1], "prompt", "LoRA and hypernetworks do not apply to Kandinsky 2.2 "
                                                          "models; remove the <lora:...>/<hypernet:...> tags."),
        (len(composable_parts(request.prompt)) > 1, "prompt", "Composable prompts (AND) are not available for "
                                                               "Kandinsky 2.2 models; write one prompt."),
        (request.regional_prompter, "regional_prompter", "Regional Prompter is not available for Kandinsky 2.2 "
                                                         "models: turn it off."),
        (request.rescale_cfg, "rescale_cfg", "Rescale CFG is not available for Kandinsky 2.2 models (its decoder "
                                             "also predicts its noise's variance): set it to 0."),
        (request.freeu, "freeu", "FreeU is not available for Kandinsky 2.2 models (its stages are SD's and SDXL's "
                                 "UNet blocks): turn it off."),
        (request.deep_shrink, "deep_shrink", "Deep Shrink is not available for Kandinsky 2.2 models (its blocks are "
                                             "SD's and SDXL's UNet blocks): turn it off."),
        (request.dynamic_thresholding, "dynamic_thresholding", "Dynamic Thresholding is not available for Kandinsky "
                                                               "2.2 models (its decoder also predicts its noise's "
                                                               "variance): turn it off."),
        (request.pag_scale, "pag_scale", "PAG is not available for Kandinsky 2.2 models: set PAG scale to 0."),
        (request.sag_scale, "sag_scale", "Self-Attention Guidance is not available for Kandinsky 2.2 models: set SAG "
                                         "scale to 0."),
        (request.tiled_diffusion, "tiled_diffusion", "Tiled Diffusion is not available for Kandinsky 2.2 models: "
                                                     "turn it off."),
    )
    for refused, field, message in refusals:
        if refused:
            raise RequestError(message, field)


def check_size(size: tuple[int, int], movq_scale: int) -> None:
    """The decoders round sizes up to whole latent blocks of ``movq_scale``² pixels; ask for those exactly."""
    block = movq_scale**2
    if size[0] % block or size[1] % block:
        raise RequestError(f"Kandinsky 2.2 makes pictures in multiples of {block} pixels; "
                           f"{size[0]}x{size[1]} is not one.", "width")


@torch.no_grad()
def encode(decoder, picture: Image.Image) -> torch.Tensor:
    """A picture's MoVQ latents (inpainting's ``LatentBlend`` puts them back outside the mask)."""
    from diffusers.utils.torch_utils import get_module_execution_device

    movq = decoder.movq
    pixels = decoder.image_processor.preprocess(picture, picture.height, picture.width)
    return movq.encode(pixels.to(get_module_execution_device(movq), movq.dtype))["latents"]
