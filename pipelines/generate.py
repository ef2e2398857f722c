"""``run_pipeline``: the one place a diffusers pipeline is called (Kandinsky 2.2's prior and decoder included).

Noise comes from CPU generators, one per image seeded with that image's seed, so a seed gives the same
picture on every device and image i of a batch equals a single run with seed + i. A step callback reports
progress (with latents for previews) and turns an interrupt request into diffusers' own ``_interrupt``
flag: the current step finishes, the rest are skipped, and what was reached is decoded and returned.
img2img and inpaint jobs pass their prepared images (``TaskImages``); as in A1111, they run
``steps x denoising strength`` steps. ControlNet units (``Controls``) add their maps, weights and step ranges to
the call, and their control-mode hooks around it; IP-Adapter units their pictures' encodings, and their adapters
on the UNet for the call (``ip_adapter``). The request's step cache (``step_cache``) wraps the call too, and
the fast modes in use (step cache, quantised weights) are labelled in the infotext. Soft inpainting blends the
latents after each step and lays the pictures over the original as it says (``soft_inpainting``). Variation seeds,
seed resize and the noise multiplier shape the pass's noise (``variation.shaping``). Prompt edits and a refiner
change the UNet's text (and the refiner its UNet) from a step on, through the step callback (``conditioning``).
FreeU is put on the pass's UNets for the call (``freeu``); Rescale CFG, PAG, SAG and NGMS change each step's
predictions in the UNet's stand-in for the pass (``conditioning``, ``composable``).
"""

from __future__ import annotations

import inspect
import logging
from contextlib import nullcontext
from typing import Callable

import torch
from diffusers.utils.torch_utils import get_module_execution_device
from PIL import Image

from . import deep_shrink, freeu, kandinsky, speed, step_cache
from .conditioning import StepConditioning
from .controlnet import Controls
from .embeddings import EmbeddingLibrary
from .errors import ModelError, RequestError
from .images import TaskImages
from .latent_blend import LatentBlend
from .request import GenerationRequest
from .soft_inpainting import SoftBlend
from .stats import RunStats, clock
from .upscalers import ImageUpscaler, upscale_latents
from .variation import latent_layout, shaping

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step, total steps, latents)


def run_pipeline(pipe, request: GenerationRequest, seeds: list[int], *, images: TaskImages | None = None,
                 on_step: StepCallback | None = None, should_stop: Callable[[], bool] | None = None,
                 latent_output: bool = False, embeddings: EmbeddingLibrary | None = None,
                 extra_params: dict | None = None, warnings: list[str] | None = None,
                 controls: Controls | None = None, stats: RunStats | None = None, refiner=None):
    """Pictures for ``seeds`` (a list of PIL images), or with ``latent_output`` the final latents (a tensor).
    The prompts are encoded here (A1111 weights, long prompts, clip skip, ``embeddings``); the textual inversions
    used go into ``extra_params`` (``TI hashes``) and refused embedding files into ``warnings``. ``stats`` gets
    this call's denoising and decoding times. Prompt edits and a ``refiner`` (a loaded model, to take over at the
    request's switch) change the conditioning during the pass (``conditioning.StepConditioning``)."""
    if extra_params is not None:
        extra_params.update(speed.infotext_params(pipe))
    if hasattr(pipe, "prior_pipe"):  # Kandinsky 2.2: a prior, then a decoder
        return _run_kandinsky(pipe, request, seeds, images=images, on_step=on_step, should_stop=should_stop,
                              latent_output=latent_output, extra_params=extra_params, warnings=warnings, stats=stats)
    runs = request.steps if images is None else max(1, int(request.steps * request.denoising_strength))
    conditioning = StepConditioning(pipe, request, embeddings, len(seeds), runs, refiner)
    conditioning.record(extra_params, warnings)
    task = images.pipeline_arguments(request) if images else {"width": request.width, "height": request.height}
    soft = (_soft_blend(pipe, request, images, seeds, task)
            if request.soft_inpainting and images is not None and images.mask is not None else None)
    steps = _Steps(on_step, should_stop, timed=stats is not None, blend=soft, conditioning=conditioning)
    if images is not None and images.resize_latents:
        task["image"] = encode_resized(pipe, images.image, request.output_size)
    # diffusers' rule for a CFG batch (a UNet conditioned on the guidance scale, as LCM's, runs none)
    guided = request.cfg_scale > 1 and getattr(conditioning.unets[0].config, "time_cond_proj_dim", None) is None
    if controls is not None:
        task.update(controls.pipeline_arguments(init_image=images is not None, guided=guided))
    generators = _generators(seeds)
    started = clock() if stats is not None else 0.0

    def progress() -> tuple[int, int]:  # the step and the steps, for the control steps and FreeU's start and end
        return steps.run, pipe.num_timesteps

    with controls.applied(conditioning.unets[0], guided, progress) if controls else nullcontext(), \
            step_cache.cached(pipe, request.step_cache), conditioning.restoring(pipe), \
            freeu.applied(conditioning.unets, request, progress), \
            deep_shrink.applied(conditioning.unets, request.shrink), \
            shaping(pipe, request, seeds, generators, task, picture=images is not None):
        result = pipe(
            **conditioning.first.kwargs,
            **task,
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            num_images_per_prompt=len(seeds),
            generator=generators,
            callback_on_step_end=steps,
            callback_on_step_end_tensor_inputs=["latents", *conditioning.inputs(pipe)],
            output_type="latent" if latent_output else "pil",
        )
    steps.record(stats, started)
    if extra_params is not None:
        extra_params.update(conditioning.ran())
    if latent_output:
        return result.images
    if images is None:
        return list(result.images)
    return images.finish(result.images, request, soft and soft.overlay_masks(result.images[0].size))


def _soft_blend(pipe, request: GenerationRequest, images: TaskImages, seeds: list[int], task: dict) -> SoftBlend:
    """Soft inpainting's step blend over what the pipeline denoises: the picture, or with "only masked" the region
    diffusers crops (found as it finds it). The pipeline's own blending is given every grey pixel to leave free."""
    task["mask_image"] = free = images.mask.point(lambda value: 255 if value else 0)
    pictures, mask, region = images.pictures(len(seeds)), images.mask, None
    if request.inpaint_full_res:
        size = images.image.size
        region = pipe.mask_processor.get_crop_region(free, *size, pad=request.inpaint_full_res_padding)
        pictures, mask = [picture.crop(region).resize(size, Image.LANCZOS) for picture in pictures], mask.crop(region)
    return SoftBlend(encode_pictures(pipe, pictures), mask, seeds, request, region)


class _Stopped(Exception):
    """Raised from a Kandinsky decoder's step callback: its loops have no interrupt flag to set."""

    def __init__(self, latents: torch.Tensor):
        super().__init__("interrupted")
        self.latents = latents


NOT_A_NUMBER = ("The picture's latents became NaN (not a number) while denoising, which decodes to a black "
                "picture: the CFG scale or a prompt weight is more than the model's numbers can hold. Lower them; "
                "in half precision, --dtype float32 also helps.")


class _Steps:
    """The step callback of every pipeline call: progress (with latents, for previews), the moment denoising ended
    (what follows is decoding) and stopping on request, through diffusers' ``_interrupt`` flag where the pipeline
    has one (the current step finishes, the rest are skipped) and otherwise (Kandinsky's decoders) by raising
    ``_Stopped`` with the latents reached. ``blend`` (Kandinsky inpainting) first puts the unmasked latents back.
    Latents that are not finite after the last step raise ``NOT_A_NUMBER`` (A1111's NaN check) instead of
    decoding to a black picture; checked once per pass, as the check waits for the device. ``conditioning`` changes
    the UNet and text for the next step where the pass's prompt edits or refiner say so."""

    def __init__(self, on_step: StepCallback | None, should_stop: Callable[[], bool] | None, timed: bool,
                 blend: Callable | None = None, conditioning: StepConditioning | None = None):
        self.on_step, self.should_stop, self.timed, self.blend = on_step, should_stop, timed, blend
        self.conditioning = conditioning
        self.run, self.denoised = 0, None

    def __call__(self, pipeline, step: int, timestep, tensors: dict) -> dict:
        self.run += 1
        if self.blend is not None:
            tensors["latents"] = self.blend(pipeline.scheduler, timestep, tensors["latents"])
        if self.on_step is not None:
            # second-order samplers (Heun, DPM2, DPM++ SDE) run more model steps than requested
            self.on_step(step + 1, pipeline.num_timesteps, tensors["latents"])
        stop = self.should_stop is not None and self.should_stop()
        last = stop or step + 1 >= pipeline.num_timesteps
        if last and not torch.isfinite(tensors["latents"]).all():
            raise ModelError(NOT_A_NUMBER)
        if self.timed and last:
            self.denoised = clock()  # the last step: what follows is decoding
        if stop:
            if not hasattr(pipeline, "_interrupt"):
                raise _Stopped(tensors["latents"])
            pipeline._interrupt = True
        elif self.conditioning is not None:
            tensors.update(self.conditioning.after(pipeline, step + 1, pipeline.num_timesteps, tensors))
        return tensors

    def record(self, stats: RunStats | None, started: float) -> None:
        if stats is not None:
            stats.add_pass(started, self.denoised, self.run, clock())


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


@torch.no_grad()
def _image_embeds(pipe, request: GenerationRequest, seeds: list[int], warnings: list[str] | None):
    """Kandinsky's prior: (image embeddings, negative image embeddings) for the prompt, or for the request's
    image mix through the prior's ``interpolate``. Its noise comes from its own generators, one per image."""
    from diffusers import UnCLIPScheduler
    from diffusers.utils.torch_utils import get_module_execution_device

    prior = pipe.prior_pipe
    prior.scheduler = UnCLIPScheduler.from_config(prior.scheduler.config)  # schedulers keep per-run state
    prompt, dropped = kandinsky.plain_prompt(request.prompt)
    negative, dropped_negative = kandinsky.plain_prompt(request.negative_prompt)
    if (dropped or dropped_negative) and warnings is not None and kandinsky.PLAIN_TEXT not in warnings:
        warnings.append(kandinsky.PLAIN_TEXT)
    options = {"num_images_per_prompt": len(seeds), "num_inference_steps": kandinsky.PRIOR_STEPS,
               "guidance_scale": kandinsky.PRIOR_GUIDANCE}
    if request.mix:
        conditions = [item.image if item.image is not None else kandinsky.plain_prompt(item.prompt)[0]
                      for item in request.mix]
        out = prior.interpolate(conditions, [item.weight for item in request.mix], generator=_generators(seeds),
                                negative_prompt=negative, device=get_module_execution_device(prior.image_encoder),
                                **options)
    else:
        # With a negative prompt the prior runs prompt and negative prompt as one batch: one generator per row.
        out = prior(prompt, negative_prompt=negative or None, generator=_generators(seeds * (2 if negative else 1)),
                    **options)
    return out.image_embeds, out.negative_image_embeds


def _run_kandinsky(pipe, request: GenerationRequest, seeds: list[int], *, images: TaskImages | None, on_step,
                   should_stop, latent_output: bool, extra_params: dict | None, warnings: list[str] | None,
                   stats: RunStats | None):
    """``run_pipeline`` for a combined Kandinsky 2.2 pipeline: the prior (or an image mix), then its decoder with
    the engine's fresh scheduler, the same seeds, progress, interrupt and (inpainting) masked latent blending."""
    if request.soft_inpainting and images is not None and images.mask is not None:
        raise RequestError("Soft inpainting is not available for Kandinsky 2.2: turn it off.", "soft_inpainting")
    decoder = pipe.decoder_pipe
    decoder.scheduler = pipe.scheduler  # the engine's fresh scheduler was set on the combined pipeline
    size = images.pictures(1)[0].size if images else (request.width, request.height)
    kandinsky.check_size(size, latent_layout(decoder)[0])
    blend = (LatentBlend(kandinsky.encode(decoder, images.image), images.mask, seeds)
             if images and images.mask is not None else None)
    steps = _Steps(on_step, should_stop, timed=stats is not None, blend=blend)
    if request.mix and extra_params is not None:
        extra_params["Image mix"] = kandinsky.mix_infotext(request.mix)
    image_embeds, negative_image_embeds = _image_embeds(pipe, request, seeds, warnings)
    # The init image is at its size already. Its size is not passed: diffusers 0.42.1's Kandinsky img2img hands
    # (width, height) to ``preprocess(image, height, width)``, which would transpose a non-square picture.
    task = ({"image": images.pictures(len(seeds)), "strength": request.denoising_strength, "width": None,
             "height": None} if images else {"width": size[0], "height": size[1]})
    generators = _generators(seeds)
    started = clock() if stats is not None else 0.0
    try:
        with step_cache.cached(decoder, request.step_cache), \
                shaping(decoder, request, seeds, generators, task, picture=images is not None):
            made = decoder(image_embeds=image_embeds, negative_image_embeds=negative_image_embeds, **task,
                           num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
                           generator=generators, callback_on_step_end=steps,
                           callback_on_step_end_tensor_inputs=["latents"],
                           output_type="latent" if latent_output else "pil").images
    except _Stopped as stopped:
        made = stopped.latents if latent_output else decode_latents(pipe, stopped.latents)
    steps.record(stats, started)
    if latent_output:
        return made
    return images.finish(made, request) if images else list(made)


def warm_up(pipe, sizes: tuple[tuple[int, int], ...]) -> None:
    """Make a compiled pipeline compile its graphs for ``sizes`` (width, height) now, while its model loads, so that
    pictures of those sizes never wait for a compile: a 2-step picture each, batch 1 with CFG, the shapes of a
    usual request. Another batch size, a hires pass's second size or a prompt past 75 tokens still compiles once,
    on first use. A size the model does not make (Kandinsky's are multiples of 64) is passed over."""
    for width, height in sizes:
        try:
            run_pipeline(pipe, GenerationRequest(prompt="", width=width, height=height, steps=2), [0])
        except RequestError as refused:
            log.info("no warm-up at %dx%d: %s", width, height, refused)


def run_upscaler(pipe, images: list, request: GenerationRequest, seeds: list[int]) -> list:
    """A model upscaler's pictures, one call per picture (each with its own seed), guided by the prompt.
    The latent x2 upscaler is run unguided, as its authors advise; an upscaler file needs no prompt."""
    if isinstance(pipe, ImageUpscaler):
        return [pipe.upscale(image) for image in images]
    guided = "noise_level" in inspect.signature(pipe.__call__).parameters  # the SD x4 upscaler
    return [
        pipe(prompt=request.prompt, negative_prompt=request.negative_prompt or None, image=image,
             num_inference_steps=request.steps, guidance_scale=request.cfg_scale if guided else 0.0,
             generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        for image, seed in zip(images, seeds)
    ]


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor) -> list:
    """Pictures from a pipeline's (scaled) latents, as its own decode step makes them; fp16 VAEs that need it
    (SDXL's) decode in float32. Kandinsky's latents are unscaled and its MoVQ decodes them unquantized."""
    if hasattr(pipe, "movq"):
        from diffusers.image_processor import VaeImageProcessor

        decoded = pipe.movq.decode(latents.to(pipe.movq.dtype), force_not_quantize=True)["sample"]
        return VaeImageProcessor().postprocess(decoded.float(), output_type="pil")
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    if upcast:
        vae.to(torch.float16)
    return pipe.image_processor.postprocess(decoded, output_type="pil")


@torch.no_grad()
def encode_pictures(pipe, images) -> torch.Tensor:
    """Pictures' (scaled) latents (a picture or a list of them); the distribution's mean keeps it deterministic."""
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(images).to(get_module_execution_device(vae), vae.dtype)
    return vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor


def encode_resized(pipe, image, size: tuple[int, int]) -> torch.Tensor:
    """A picture's (scaled) latents at its own size, stretched to ``size``: A1111's latent-upscale resize mode."""
    return upscale_latents(encode_pictures(pipe, image), size, pipe.vae_scale_factor, "Latent")
