"""Soft inpainting (A1111's): the length-keeping latent mix, the weighted percentile filter, the step blend's
schedule, the pixel composite's masks, and the engine path on a tiny model."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from PIL import Image

from pipelines.errors import RequestError
from pipelines.request import GenerationRequest
from pipelines.soft_inpainting import SETTINGS, SoftBlend, keep_length, percentile_filter


def test_the_mix_keeps_the_vectors_length():
    a, b = torch.tensor([1.0, 0.0])[None, :, None, None], torch.tensor([0.0, 1.0])[None, :, None, None]
    for t, expected in ((0.0, a), (1.0, b)):
        assert torch.allclose(keep_length(a, b, torch.full((1, 1, 1, 1), t), 4.0), expected, atol=1e-4)
    half = keep_length(a, b, torch.full((1, 1, 1, 1), 0.5), 1.0)
    assert torch.allclose(half.norm(dim=1), torch.ones(1, 1, 1), atol=1e-4)  # a plain mix would be 0.707 long
    assert torch.allclose(half[0, :, 0, 0], torch.tensor([0.7071, 0.7071]), atol=1e-3)
    long = keep_length(a, 3 * b, torch.full((1, 1, 1, 1), 0.5), 8.0).norm()
    assert 2.5 < long < 3  # a large boost: near the longer one's length


def _reference_filter(image: np.ndarray, low: float, high: float, kernel: np.ndarray) -> np.ndarray:
    """The filter pixel by pixel: the window's (value, weight) pairs sorted, the weights stacked, and the values
    averaged over the overlap of the stack with [low, high] of its height (at least 1 tall, kept inside it)."""
    radius = kernel.shape[0] // 2
    out = np.zeros_like(image, dtype=float)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            pairs = sorted((image[y + dy, x + dx], kernel[dy + radius, dx + radius])
                           for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
                           if 0 <= y + dy < image.shape[0] and 0 <= x + dx < image.shape[1])
            total = sum(weight for _, weight in pairs)
            bottom, top = total * low, total * high
            if top - bottom < 1:
                middle = (bottom + top) / 2
                bottom, top = middle - 0.5, middle + 0.5
                if top > total:
                    bottom, top = total - 1, total
                if bottom < 0:
                    bottom, top = 0, 1
            start, value, weight_sum = 0.0, 0.0, 0.0
            for v, weight in pairs:
                overlap = max(0.0, min(top, start + weight) - max(bottom, start))
                value, weight_sum, start = value + v * overlap, weight_sum + overlap, start + weight
            out[y, x] = value / weight_sum
    return out


@pytest.mark.parametrize("low, high", [(0.9, 1.0), (0.25, 0.75), (0.0, 0.05)])
def test_the_percentile_filter_matches_its_definition(low, high):
    from pipelines.soft_inpainting import _kernel

    image = np.random.default_rng(3).random((6, 7)) * 10
    assert np.allclose(percentile_filter(image, low, high), _reference_filter(image, low, high, _kernel()))
    assert _kernel()[2, 2] == 1 and _kernel()[0, 0] > 0 and _kernel().shape == (5, 5)


def _blend(mask_values, **settings) -> SoftBlend:
    mask = Image.fromarray(np.array([mask_values], dtype=np.uint8))
    original = torch.ones(1, 4, 1, len(mask_values))
    return SoftBlend(original, mask, [1], GenerationRequest(**settings))


def test_the_step_blend_keeps_grey_places_nearer_the_original_while_the_noise_is_high():
    """Unmasked places are the original (noised to the step's level), fully masked ones the sampler's, grey ones
    between, nearer the original early (high sigma) than late."""
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(10)
    blend = _blend([0, 128, 255])
    latents = torch.full((1, 4, 1, 3), -1.0)
    early = blend(scheduler, scheduler.timesteps[0], latents)
    noised = blend.noised(scheduler, scheduler.timesteps[0])
    assert torch.allclose(early[..., 0], noised[..., 0]) and torch.allclose(early[..., 2], latents[..., 2])
    late = blend(scheduler, scheduler.timesteps[-1], latents)
    assert torch.allclose(late[..., 0], blend.original[..., 0])  # after the last step: the original itself
    share = [float((mixed[0, :, 0, 1] - ref[0, :, 0, 1]).norm() / (latents[0, :, 0, 1] - ref[0, :, 0, 1]).norm())
             for mixed, ref in ((early, noised), (late, blend.original))]
    assert share[0] < 0.1 < share[1]  # how far towards the sampler's the grey place went
    weaker = _blend([0, 128, 255], soft_preservation=0.05)(scheduler, scheduler.timesteps[0], latents)
    assert (weaker[0, :, 0, 1] - noised[0, :, 0, 1]).norm() > (early[0, :, 0, 1] - noised[0, :, 0, 1]).norm()


def test_the_composite_shows_the_picture_where_it_changed():
    blend = _blend([0] * 16 + [255] * 16)
    blend.last = blend.original.clone()
    blend.last[..., 16:] += 5  # the masked half changed a lot, the rest not at all
    mask = np.asarray(blend.overlay_masks((256, 8))[0])
    assert mask.shape == (8, 256) and mask[:, :88].max() == 0 and mask[:, 136:].min() == 255
    assert _blend([0, 255]).overlay_masks((16, 8)) is None  # no step ran


def request_for(**values) -> GenerationRequest:
    mask = Image.fromarray(np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1)))  # left keeps, right repaints
    mask.paste(0, (0, 0, 24, 64))
    picture = Image.new("RGB", (64, 64), (200, 40, 40))
    return GenerationRequest(**{"prompt": "a blue square", "model": "tiny-sd", "width": 64, "height": 64, "steps": 6,
                                "seed": 3, "task": "inpaint", "init_image": picture, "mask": mask,
                                "mask_blur": 0, "denoising_strength": 1.0, **values})


def test_soft_inpainting_blends_without_a_seam_and_keeps_the_rest(engine):
    soft = engine.generate(request_for(soft_inpainting=True))
    hard = engine.generate(request_for())
    original = np.full((64, 64, 3), (200, 40, 40))
    change = [np.abs(np.asarray(result.images[0], dtype=int) - original).mean(axis=(0, 2)) for result in (soft, hard)]
    assert change[0][:8].max() == 0  # unmasked, two latent pixels from the mask: the picture exactly
    # the mask steps from 0 to 97 at x = 24: a seam there with the rounded mask, none with the soft one
    assert change[1][24] - change[1][23] > 20 and abs(change[0][24] - change[0][23]) < 10
    assert change[0][60:].mean() > 20  # the repainted side is repainted
    text = soft.infotexts[0]
    assert ("Masked content: original, Soft inpainting enabled: True, Soft inpainting schedule bias: 1, Soft "
            "inpainting preservation strength: 0.5, Soft inpainting transition contrast boost: 4, Soft inpainting "
            "mask influence: 0, Soft inpainting difference threshold: 0.5, Soft inpainting difference contrast: 2, "
            "Version") in text
    assert "Soft inpainting" not in hard.infotexts[0]
    read = GenerationRequest.from_infotext(text.replace("schedule bias: 1,", "schedule bias: 2,"))
    assert read.soft_inpainting and [getattr(read, s.field) for s in SETTINGS] == [2, 0.5, 4, 0, 0.5, 2]
    assert "Soft" not in engine.generate(replace(read, model="tiny-sd", steps=1)).infotexts[0]  # txt2img: no mask


def test_only_masked_blends_in_the_region_it_repaints(engine):
    """With "only masked" the blend and the composite work in the box diffusers crops (the mask's, padded by 4):
    outside it the picture is kept exactly."""
    mask = Image.new("L", (64, 64), 0)
    mask.paste(Image.linear_gradient("L").resize((16, 16)), (40, 40))  # a ramp down to white, bottom right
    result = engine.generate(request_for(soft_inpainting=True, inpaint_full_res=True, inpaint_full_res_padding=4,
                                         mask=mask))
    out = np.asarray(result.images[0], dtype=int)
    assert (out[:32] == (200, 40, 40)).all() and (out[:, :32] == (200, 40, 40)).all()
    assert np.abs(out[50:56, 40:56] - (200, 40, 40)).mean() > 20  # the ramp's white end repainted
    assert "Inpaint area: Only masked" in result.infotexts[0] and "Soft inpainting enabled: True" in result.infotexts[0]


def test_with_sdxl_controlnet_loopback_and_an_inpainting_model(engine, tmp_path):
    from pipelines.controlnet import ControlUnit
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from training.tiny_random import build_tiny_sd

    build_tiny_sd(inpainting=True).save_pretrained(tmp_path / "Stable-diffusion" / "tiny-inpaint")
    inpainting = Engine(Registry(tmp_path, device="cpu"), OutputWriter(tmp_path / "out"))
    unit = ControlUnit(model="tiny-sd-control", image=Image.new("RGB", (64, 64)), weight=1.0)
    for runner, values in ((engine, {"model": "tiny-sdxl"}), (engine, {"controlnets": [unit]}),
                           (engine, {"loopback": True, "loopback_loops": 2, "denoising_strength": 0.6}),
                           (inpainting, {"model": "tiny-inpaint"})):
        result = runner.generate(request_for(soft_inpainting=True, **values))
        assert "Soft inpainting enabled: True" in result.infotexts[-1], values
        assert (np.asarray(result.images[-1])[:, :8] == (200, 40, 40)).all(), values  # far from the mask: kept


@pytest.mark.parametrize("values, field", [
    ({"soft_contrast_boost": 0.5}, "soft_contrast_boost"),  # below its slider
    ({"soft_mask_influence": "much"}, "soft_mask_influence"),
])
def test_bad_settings_are_refused_by_name(values, field):
    with pytest.raises(RequestError) as error:
        request_for(**values)
    assert error.value.field == field
