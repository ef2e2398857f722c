"""``run_pipeline``: the one place a diffusers pipeline is called.

Noise comes from CPU generators, one per image seeded with that image's seed, so a seed gives the same
picture on every device and image i of a batch equals a single run with seed + i. A step callback reports
progress (with latents for previews) and turns an interrupt request into diffusers' own ``_interrupt``
flag: the current step finishes, the rest are skipped, and what was reached is decoded and returned.
img2img and inpaint jobs pass their prepared images (``TaskImages``); as in A1111, they run
``steps x denoising strength`` steps. ControlNet units (``Controls``) add their maps, weights and step ranges to
the call, and their control-mode hooks around it.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from typing import Callable

import torch
from diffusers.utils.torch_utils import get_module_execution_device

from .controlnet import Controls
from .embeddings import EmbeddingLibrary
from .images import TaskImages
from .request import GenerationRequest
from .stats import RunStats, clock
from .text_encoding import encode_prompts
from .upscalers import upscale_latents

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step, total steps, latents)


def run_pipeline(pipe, request: GenerationRequest, seeds: list[int], *, images: TaskImages | None = None,
                 on_step: StepCallback | None = None, should_stop: Callable[[], bool] | None = None,
                 latent_output: bool = False, embeddings: EmbeddingLibrary | None = None,
                 extra_params: dict | None = None, warnings: list[str] | None = None,
                 controls: Controls | None = None, stats: RunStats | None = None):
    """Pictures for ``seeds`` (a list of PIL images), or with ``latent_output`` the final latents (a tensor).
    The prompts are encoded here (A1111 weights, long prompts, clip skip, ``embeddings``); the textual inversions
    used go into ``extra_params`` (``TI hashes``) and refused embedding files into ``warnings``. ``stats`` gets
    this call's denoising and decoding times."""
    steps_run, denoised = 0, None

    def step_end(pipeline, step: int, timestep, tensors: dict) -> dict:
        nonlocal steps_run, denoised
        steps_run += 1
        if on_step is not None:
            # second-order samplers (Heun, DPM2, DPM++ SDE) run more model steps than requested
            on_step(step + 1, pipeline.num_timesteps, tensors["latents"])
        if should_stop is not None and should_stop():
            pipeline._interrupt = True
        if stats is not None and (pipeline._interrupt or step + 1 >= pipeline.num_timesteps):
            denoised = clock()  # the last step: what follows is decoding
        return tensors

    text = encode_prompts(pipe, request.prompt, request.negative_prompt, request.clip_skip, embeddings)
    text.record(extra_params, warnings)
    task = images.pipeline_arguments(request) if images else {"width": request.width, "height": request.height}
    if images is not None and images.resize_latents:
        task["image"] = encode_resized(pipe, images.image, request.output_size)
    if controls is not None:
        task.update(controls.pipeline_arguments(init_image=images is not None))
    started = clock() if stats is not None else 0.0
    with controls.modes(guided=request.cfg_scale > 1) if controls else nullcontext():
        result = pipe(
            **text.kwargs,
            **task,
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            num_images_per_prompt=len(seeds),
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            callback_on_step_end=step_end,
            callback_on_step_end_tensor_inputs=["latents"],
            output_type="latent" if latent_output else "pil",
        )
    if stats is not None:
        stats.add_pass(started, denoised, steps_run, clock())
    if latent_output:
        return result.images
    if images is None:
        return list(result.images)
    return [images.finish(image, request) for image in result.images]


def run_upscaler(pipe, images: list, request: GenerationRequest, seeds: list[int]) -> list:
    """A model upscaler's pictures, one call per picture (each with its own seed), guided by the prompt.
    The latent x2 upscaler is run unguided, as its authors advise."""
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
    (SDXL's) decode in float32."""
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    dtype = torch.float32 if upcast else vae.dtype
    decoded = vae.to(dtype).decode(latents.to(dtype) / vae.config.scaling_factor, return_dict=False)[0]
    if upcast:
        vae.to(torch.float16)
    return pipe.image_processor.postprocess(decoded, output_type="pil")


@torch.no_grad()
def encode_resized(pipe, image, size: tuple[int, int]) -> torch.Tensor:
    """A picture's (scaled) latents at its own size, stretched to ``size``: A1111's latent-upscale resize mode.
    The distribution's mean keeps it deterministic."""
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(image).to(get_module_execution_device(vae), vae.dtype)
    latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    return upscale_latents(latents, size, pipe.vae_scale_factor, "Latent")
