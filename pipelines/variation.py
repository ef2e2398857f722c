"""A pass's noise when the request shapes it (A1111's variation seeds, seed resize, img2img noise multiplier, extra
noise and eta noise seed delta).

Variation seeds: the seed's noise is turned towards another seed's (the variation seed, ``subseed``) by
``subseed_strength``, spherically per latent pixel, so that small strengths give small changes of the same picture
and strength 1 the variation seed's own start. Seed resize: the noise the seed gives at another size (``Resize seed
from``) is put in the middle of the picture's, so a picture keeps its composition when its size changes. Noise
multiplier (img2img and inpaint): the noise added to the init picture is scaled.

Every pass that shapes noise starts from the seed's own noise as the pipeline draws it from the very generators it
then samples with, so the sampler's later noise (ancestral samplers) is the seed's as without shaping. A pass that
starts from noise (txt2img, inpaint at full strength) is given its starting latents; an img2img pass (inpaint,
hires fix's second pass) draws its noise itself and hands it to the scheduler's ``add_noise``, which is where the
shaped noise takes its place. Kandinsky 2.2's decoders are shaped the same way: their latents are MoVQ's.

Extra noise (A1111's "Extra noise multiplier for img2img and hires fix"): a pass that adds noise to a picture adds
that much more of the same noise than its first step's noise level says, to the picture's latents before they are
noised: ``add_noise(picture + extra x noise, noise, t)``, which is A1111's ``+ noise x extra`` for k-diffusion's
samplers and ``+ noise x extra x sqrt(alpha_bar)`` for DDIM's kind alike. Only the pass's start gets it (inpainting
re-noises the picture at every step to keep what is not masked: those are the plain noise's).

Eta noise seed delta (ENSD) leaves the starting noise alone and reseeds each generator with its seed + delta just
before the pass's first sampling step, as A1111's noise source does after the first noise: whatever the pipeline drew
before (the picture's encoding, the starting noise) is the seed's, every draw of the sampler seed + delta's.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

import torch
from diffusers.utils.torch_utils import randn_tensor

from .sampler_parameters import draws_noise
from .script_settings import Setting

EXTRA_NOISE = Setting("img2img_extra_noise", "Extra noise", "Extra noise", 0.0, 0.0, 1.0, 0.01,
                      "more noise than the strength adds, at the start; 0 = off; keep it under the denoising strength")


def slerp(t: float, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """From ``start`` (t=0) to ``end`` (t=1) along the great circle, for each latent pixel's channel vector."""
    cos = (start / start.norm(dim=1, keepdim=True) * end / end.norm(dim=1, keepdim=True)).sum(1, keepdim=True)
    if cos.mean() > 0.9995:  # nearly parallel: the straight line is as good and stays finite
        return (1 - t) * start + t * end
    angle = cos.clamp(-1, 1).acos()
    return (((1 - t) * angle).sin() * start + (t * angle).sin() * end) / angle.sin()


def shapes_noise(request) -> bool:
    """Whether the request's noise is not simply its seed's."""
    return bool(request.subseed_strength or request.seed_resize_from or request.noise_multiplier != 1)


def paste_centred(noise: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
    """``into`` with ``noise`` over its middle; where ``noise`` is the larger, its middle is what fits."""
    rows, columns = (min(a, b) for a, b in zip(noise.shape[-2:], into.shape[-2:]))
    top, left = ((into.shape[i] - size) // 2 for i, size in ((-2, rows), (-1, columns)))
    source_top, source_left = ((noise.shape[i] - size) // 2 for i, size in ((-2, rows), (-1, columns)))
    pasted = into.clone()
    pasted[..., top:top + rows, left:left + columns] = noise[..., source_top:source_top + rows,
                                                             source_left:source_left + columns]
    return pasted


def _draw(generator: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, skip: int) -> torch.Tensor:
    """The noise of ``shape`` after ``skip`` draws of that shape (the same count of random numbers in any dtype)."""
    for _ in range(skip + 1):
        noise = randn_tensor(shape, generator=generator, dtype=dtype)
    return noise


def shaped(request, seeds: list[int], own: torch.Tensor, scale: int, skip: int) -> torch.Tensor:
    """The request's noise for ``seeds`` from their own (``own``: a batch, one row per seed, as the pipeline drew
    it; ``scale``: pixels per latent), on ``own``'s device and in its dtype. Another seed's noise (the variation
    seed's, or the seed's at another size) is drawn as the pipeline draws its own: after ``skip`` draws."""
    resize = request.seed_resize_from

    def drawn(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
        return _draw(torch.Generator("cpu").manual_seed(seed), shape, own.dtype, skip).float()

    rows = []
    for seed, row in zip(seeds, own.float().cpu().split(1)):
        source = (*row.shape[:2], resize[1] // scale, resize[0] // scale) if resize else row.shape
        start = drawn(seed, source) if resize else row
        if request.subseed_strength:
            start = slerp(request.subseed_strength, start, drawn(request.subseed_for(seed), source))
        rows.append(paste_centred(start, row) if resize else start)
    return (torch.cat(rows) * request.noise_multiplier).to(own.device, own.dtype)


def starting_noise(pipe, request, seeds: list[int], generators: list[torch.Generator], size: tuple[int, int],
                   skip: int = 0) -> torch.Tensor:
    """The unscaled starting latents (diffusers' ``latents``) of a pass of ``size`` (width, height) for ``seeds``:
    each seed's own noise is what the pipeline would draw from its generator (after ``skip`` draws), and each
    generator moves one draw on, as the pipeline's own draw would have moved it, so that its later draws (the
    sampler's) are the seed's as without shaping."""
    scale, channels = latent_layout(pipe)
    shape = (1, channels, size[1] // scale, size[0] // scale)  # inpainting UNets take 9
    own = []
    for generator in generators:
        own.append(_draw(torch.Generator("cpu").set_state(generator.get_state()), shape, pipe.unet.dtype, skip))
        randn_tensor(shape, generator=generator)
    return shaped(request, seeds, torch.cat(own), scale, skip)


def latent_layout(pipe) -> tuple[int, int]:
    """Pixels per latent and latent channels: of SD's VAE, or of Kandinsky 2.2's MoVQ."""
    if hasattr(pipe, "movq"):  # its img2img pipeline keeps no movq_scale_factor
        return 2 ** (len(pipe.movq.config.block_out_channels) - 1), pipe.movq.config.latent_channels
    return pipe.vae_scale_factor, pipe.vae.config.latent_channels


def _draws_before_noise(pipe, task: dict, picture: bool) -> int:
    """The draws of the noise's shape a pipeline takes from each generator before its noise: one to sample the
    picture's encoding, unless there is no picture, it comes as latents, it is MoVQ's (which samples nothing), or
    (an inpainting UNet's masked picture at full strength) it is sampled after the noise."""
    image = task.get("image")
    if (not picture or hasattr(pipe, "movq")
            or isinstance(image, torch.Tensor) and image.shape[1] == pipe.vae.config.latent_channels):
        return 0
    inpainting_unet = pipe.unet.config.in_channels != pipe.vae.config.latent_channels
    return 0 if inpainting_unet and task.get("strength") == 1.0 else 1


@contextmanager
def reseeded(pipe, request, seeds: list[int], generators: list[torch.Generator]):
    """For the pipeline call: ``generators`` reseeded with their seeds + the request's ENSD as its scheduler takes
    its first step, where the pass's sampler draws noise (where it does not, the picture would be the same)."""
    delta = request.eta_noise_seed_delta
    if not delta or not draws_noise(request):
        yield
        return
    scheduler = pipe.scheduler
    step = scheduler.step

    @functools.wraps(step)  # its signature kept: pipelines read it to know whether to pass the generators
    def first_step(*args, **kwargs):
        for generator, seed in zip(generators, seeds):
            generator.manual_seed(seed + delta)
        scheduler.step = step
        return step(*args, **kwargs)

    scheduler.step = first_step
    try:
        yield
    finally:
        del scheduler.step


@contextmanager
def shaping(pipe, request, seeds: list[int], generators: list[torch.Generator], task: dict, picture: bool):
    """For the pipeline call with ``task``'s arguments: the request's noise in place of the seed's. A pass that
    starts from noise (txt2img; inpainting at full strength) gets its starting latents in ``task``; any other (an
    img2img pass over a ``picture``) has its scheduler add the shaped noise where the pipeline hands it the seed's
    (inpainting hands the same noise again at every step: it is shaped once), and the request's extra noise added
    at its start. The sampler's own noise is ENSD's (``reseeded``)."""
    with reseeded(pipe, request, seeds, generators), _shaped_start(pipe, request, seeds, generators, task, picture):
        yield


@contextmanager
def _shaped_start(pipe, request, seeds: list[int], generators: list[torch.Generator], task: dict, picture: bool):
    from_noise = not picture or "mask_image" in task and task["strength"] == 1.0
    extra = request.extra_noise if picture else 0.0  # the request's rule: none for inpainting at full strength
    if not shapes_noise(request) and not extra:
        yield
        return
    skip = _draws_before_noise(pipe, task, picture)
    if from_noise:
        task["latents"] = starting_noise(pipe, request, seeds, generators, (task["width"], task["height"]), skip)
        yield
        return
    scheduler, last = pipe.scheduler, {}
    add_noise = scheduler.add_noise

    def add_shaped_noise(original: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        if last.get("drawn") is not noise:  # the pass's start
            last.update(drawn=noise, shaped=shaped(request, seeds, noise, latent_layout(pipe)[0], skip))
            original = original + extra * last["shaped"]
        return add_noise(original, last["shaped"], timesteps)

    scheduler.add_noise = add_shaped_noise
    try:
        yield
    finally:
        del scheduler.add_noise
