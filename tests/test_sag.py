"""Self-Attention Guidance (``pipelines/sag.py``) on tiny random pipelines: the rule against diffusers' own SAG
pipeline, its blur and attention map, every UNet pipeline, the extra UNet call, the refusals (a UNet without a
middle block: ``test_guidance.py``), the infotext (the A1111 extension's keys and Forge's) and the X/Y/Z axes. What
it does to a picture is checked on the embedded model (``test_embedded_model.py``)."""

import numpy as np
import pytest
import torch
from diffusers.pipelines.deprecated.stable_diffusion_sag.pipeline_stable_diffusion_sag import (
    StableDiffusionSAGPipeline)
from PIL import Image

from pipelines.errors import RequestError
from pipelines.generate import run_pipeline
from pipelines.request import GenerationRequest
from pipelines.sag import SelfAttentionGuidance, grid, recording
from pipelines.samplers import make_scheduler
from pipelines.xyz import plan
from training.tiny_random import build_tiny_sd, build_tiny_sdxl


def small(**values) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle", "negative_prompt": "blue", "steps": 3, "width": 64,
                                "height": 64, "cfg_scale": 9.0, "sampler": "Euler", **values})


@pytest.mark.parametrize("scale", [9.0, 1.0], ids=["cfg", "no-cfg"])
def test_sag_makes_the_picture_of_diffusers_sag_pipeline(scale):
    """diffusers' pipeline has the paper's rule (blur sigma 1, threshold 1) for the DDIM kind of scheduler, whose
    UNet input is the latents themselves; with CFG it reads the unprompted rows, without it the prompted ones."""
    pipe = build_tiny_sd()
    pipe.scheduler = make_scheduler("DDIM", "Automatic", pipe.scheduler.config)
    reference = StableDiffusionSAGPipeline(**{k: v for k, v in pipe.components.items() if k != "image_encoder"},
                                           requires_safety_checker=False)
    theirs = reference(prompt="a red circle", negative_prompt="blue", num_inference_steps=3, width=64, height=64,
                       guidance_scale=scale, sag_scale=0.75, num_images_per_prompt=2, output_type="latent",
                       generator=[torch.Generator().manual_seed(seed) for seed in (1, 2)]).images
    ours = run_pipeline(pipe, small(cfg_scale=scale, sampler="DDIM", sag_scale=0.75), [1, 2], latent_output=True)
    plain = run_pipeline(pipe, small(cfg_scale=scale, sampler="DDIM"), [1, 2], latent_output=True)
    assert (ours - theirs).abs().max() < 1e-3 < 1 < (plain - theirs).abs().max()
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}  # put back


def test_only_the_places_attended_above_the_threshold_are_blurred():
    pictures = torch.zeros(1, 2, 8, 8)
    for row, column in ((2, 2), (5, 5), (2, 5)):  # a dot in the top left quarter, the bottom right, the top right
        pictures[:, :, row, column] = 1.0
    received = torch.tensor([[[1.5, 0.5], [0.5, 1.5]]])  # a 2 x 2 map: the top left and bottom right above 1
    degraded = SelfAttentionGuidance(1.0, blur_sigma=1.0, threshold=1.0).degraded(pictures, received)
    assert degraded[0, 0, 2, 2] < 0.5 and degraded[0, 1, 2, 1] > 0.05  # blurred: spread to its neighbours
    assert degraded[0, 0, 5, 5] < 0.5 and degraded[0, 1, 6, 5] > 0.05
    assert torch.equal(degraded[0, :, :4, 4:], pictures[0, :, :4, 4:])  # a quarter below the threshold: as it was
    untouched = SelfAttentionGuidance(1.0, threshold=2.0).degraded(pictures, received)
    assert torch.equal(untouched, pictures)


@pytest.mark.parametrize("build", [build_tiny_sd, build_tiny_sdxl], ids=["sd", "sdxl"])
def test_the_attention_map_is_the_middle_blocks_at_any_size(build):
    """Each place receives a share of every place's attention, 1 on average; the middle block's grid of latents 44 x
    36 is the downsamplers' halving, rounded up."""
    pipe = build()
    latents = torch.randn(2, 4, 44, 36)
    texts = torch.randn(2, 7, pipe.unet.config.cross_attention_dim)
    added = {"text_embeds": torch.randn(2, 8), "time_ids": torch.zeros(2, 6)} if build is build_tiny_sdxl else None
    with recording(pipe.unet, 1, 44, 36) as received:
        pipe.unet(latents, 500, encoder_hidden_states=texts, added_cond_kwargs=added)
    attention = received()
    height, width = grid(pipe.unet, 44, 36)
    assert attention.shape == (1, height, width) and (height, width) != (44, 36)
    assert abs(attention.mean().item() - 1) < 1e-4 and attention.std() > 0


@pytest.mark.parametrize("values", [
    {"model": "tiny-sd"},
    {"model": "tiny-sd", "cfg_scale": 1.0},
    {"model": "tiny-sdxl", "prompt": "a red circle AND a blue square:0.5"},  # composable parts
    {"model": "tiny-sd", "pag_scale": 3.0},
    {"model": "tiny-sd", "rescale_cfg": 0.7, "dynamic_thresholding": True},
    {"model": "tiny-sd", "task": "img2img", "init_image": Image.new("RGB", (64, 64), "red"),
     "denoising_strength": 0.7},
    {"model": "tiny-sd", "task": "inpaint", "init_image": Image.new("RGB", (64, 64), "red"),
     "mask": Image.new("L", (64, 64), 255), "denoising_strength": 1.0},
], ids=["txt2img", "no-cfg", "composable-sdxl", "pag", "rescale-thresholding", "img2img", "inpaint"])
def test_sag_changes_every_unet_pipelines_picture(engine, values):
    plain = engine.generate(small(seed=3, **values))
    guided = engine.generate(small(seed=3, sag_scale=0.75, **values))
    assert not np.array_equal(np.asarray(guided.images[0]), np.asarray(plain.images[0]))
    assert "SAG" not in plain.infotexts[0] and "SAG Guidance Scale: 0.75" in guided.infotexts[0]


def test_each_call_is_followed_by_one_on_its_first_pictures(engine):
    """The unprompted rows (2 of 4 with CFG), or the prompted ones where a call leaves them out (Skip Early CFG)."""
    from unet_calls import UNetCalls

    def rows(**values) -> list[int]:
        with UNetCalls(engine, "tiny-sd") as calls:
            engine.generate(small(model="tiny-sd", steps=2, seed=3, batch_size=2, sag_scale=0.75, **values))
        return [call["sample"].shape[0] for call in calls["tiny-sd"]]

    assert rows() == [4, 2, 4, 2]
    assert rows(skip_early_cond=1.0) == [2, 2, 2, 2]
    assert rows(cfg_scale=1.0) == [2, 2, 2, 2]


@pytest.mark.parametrize("values, field, message", [
    ({"sag_scale": 6}, "sag_scale", "SAG scale must be between -2 and 5, got 6"),
    ({"sag_blur_sigma": 0}, "sag_blur_sigma", "SAG blur sigma must be between 0.1 and 10, got 0"),
    ({"sag_threshold": 5}, "sag_threshold", "SAG mask threshold must be between 0 and 4, got 5"),
    ({"sag_scale": 0.5, "tiled_diffusion": True}, "sag_scale", "Tiled Diffusion's calls see a tile of it"),
    ({"sag_scale": 0.5, "step_cache": 2}, "step_cache", "set the step cache or SAG scale to 0"),
])
def test_bad_settings_are_refused_naming_the_field(values, field, message):
    with pytest.raises(RequestError, match=message) as caught:
        small(**values)
    assert caught.value.field == field


def test_the_infotext_has_the_extensions_keys_and_reads_forges_back():
    request = small(seed=5, model="m", sag_scale=0.75, sag_blur_sigma=2, sag_threshold=0.8)
    text = request.infotext(5, "m")
    assert "SAG Guidance Scale: 0.75, SAG Blur Sigma: 2, SAG Mask Threshold: 0.8" in text
    assert GenerationRequest.from_infotext(text, sampler="Euler") == request
    extension = GenerationRequest.from_infotext(  # the A1111 extension writes no blur: its blur sigma is 1
        "a red circle\nSteps: 3, Sampler: Euler, Seed: 5, SAG Guidance Scale: 0.75, SAG Mask Threshold: 1")
    assert (extension.sag_scale, extension.sag_blur_sigma, extension.sag_threshold) == (0.75, 1.0, 1.0)
    forge = GenerationRequest.from_infotext("a red circle\nSteps: 3, Sampler: Euler, Seed: 5, sag_enabled: True, "
                                            "sag_scale: 0.5, sag_blur_sigma: 2, sag_threshold: 1.2")
    assert (forge.sag_scale, forge.sag_blur_sigma, forge.sag_threshold) == (0.5, 2.0, 1.2)
    assert "SAG" not in small(sag_blur_sigma=3).infotext(5, "m")  # off: nothing written


def test_the_xyz_axes_are_the_extensions():
    cells = plan(small(), [("SAG Guidance Scale", "0, 0.75"), ("SAG Mask Threshold", "1, 1.5"),
                           ("SAG Blur Sigma", "2")]).cells
    assert (cells[0, 0, 0].sag_scale, cells[1, 0, 0].sag_scale) == (0.0, 0.75)
    assert (cells[0, 1, 0].sag_threshold, cells[0, 0, 0].sag_blur_sigma) == (1.5, 2.0)


def test_controlnet_ip_adapter_and_hires_fix_guide_the_second_call_too(engine):
    """The second call takes the unprompted rows of what the call was given: ControlNet's residuals at every level,
    IP-Adapter's picture encodings; hires fix's second pass is guided at its own size."""
    from unet_calls import UNetCalls

    canvas = Image.new("RGB", (64, 64), "white")
    units = [{"model": "tiny-sd-control", "module": "canny", "image": canvas},
             {"model": "ip-adapter_tiny-sd", "module": "ip-adapter_clip_h", "image": canvas}]
    with UNetCalls(engine, "tiny-sd") as calls:
        made = engine.generate(small(model="tiny-sd", seed=3, steps=2, controlnets=units, sag_scale=0.75,
                                     enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2))
    shapes = [tuple(call["sample"].shape) for call in calls["tiny-sd"]]
    assert shapes == [(2, 4, 32, 32), (1, 4, 32, 32)] * 2 + [(2, 4, 48, 48), (1, 4, 48, 48)] * 2, shapes
    assert {len(call["down_block_additional_residuals"]) for call in calls["tiny-sd"]} == {4}
    assert [call["added_cond_kwargs"]["image_embeds"][0].shape[0] for call in calls["tiny-sd"]][:2] == [2, 1]
    assert "SAG Guidance Scale: 0.75" in made.infotexts[0]
