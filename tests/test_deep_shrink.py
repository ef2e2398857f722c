"""Deep Shrink (``pipelines/deep_shrink.py``) on tiny random UNets: the hooks against ComfyUI's UNet loop with its
patches, at every block, both ways, at odd sizes, with ControlNet's residuals; the calls outside its span left as
they are; its span, second phase and automatic factor; the refusals; in the pipelines (the hires pass left alone);
the infotext (Forge's keys) and the X/Y/Z axes. What it does to a picture is checked on the embedded model
(``test_embedded_model.py``)."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from pipelines.deep_shrink import DeepShrink, applied, input_blocks
from pipelines.errors import RequestError
from pipelines.generate import run_pipeline
from pipelines.request import GenerationRequest
from pipelines.xyz import plan
from training.tiny_random import build_tiny_sd, build_tiny_sdxl

TEXT_WIDTH = 16


@pytest.fixture(scope="module")
def unet():
    """SD 1.x's layout, small: four levels of two layers, transformers in the first three (input blocks 0 to 11)."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=2, cross_attention_dim=TEXT_WIDTH,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8, norm_num_groups=16).eval()


def shrink(block: int = 3, factor: float = 2.0, after_skip: bool = True, **values) -> DeepShrink:
    settings = {"deep_shrink_start": 0.0, "deep_shrink_end": 0.35, "deep_shrink_downscale": "bicubic",
                "deep_shrink_upscale": "bicubic", "deep_shrink_phase2": False, **values}
    return DeepShrink(block, factor, deep_shrink_after_skip=after_skip, **settings)


def comfy(unet, sample, timestep, text, number, factor, after_skip, residuals=None, middle=None):
    """ComfyUI's UNet loop (its ``openaimodel`` forward) with PatchModelAddDownscale's patches, on diffusers'
    modules: input block ``number``'s output shrunk before or after it is kept, each output block's input resized
    (bicubic) to its skip connection's size, each upsampler giving the next skip connection's size. ControlNet's
    residuals (Easel's rule: resized, where ComfyUI leaves out those of another size) are added to the skip
    connections and the middle block's output."""
    emb = unet.time_embedding(unet.time_proj(torch.tensor([float(timestep)])))

    def patch(features, index):
        if index != number:
            return features
        return F.interpolate(features, size=[round(side / factor) for side in features.shape[-2:]], mode="bicubic")

    features = unet.conv_in(sample)
    kept, index = [features], 0
    for down in unet.down_blocks:
        attentions = getattr(down, "attentions", None) or [None] * len(down.resnets)
        layers = [lambda h, resnet=resnet, attention=attention: (
            attention(resnet(h, emb), encoder_hidden_states=text).sample if attention else resnet(h, emb))
            for resnet, attention in zip(down.resnets, attentions)]
        for layer in layers + list(down.downsamplers or ()):
            index += 1
            features = layer(features)
            features = features if after_skip else patch(features, index)
            kept.append(features)
            features = patch(features, index) if after_skip else features
    if residuals is not None:
        kept = [skip + F.interpolate(residual, size=skip.shape[-2:], mode="bicubic")
                for skip, residual in zip(kept, residuals)]
    features = unet.mid_block(features, emb, encoder_hidden_states=text)
    if middle is not None:
        features = features + F.interpolate(middle, size=features.shape[-2:], mode="bicubic")
    for up in unet.up_blocks:
        attentions = getattr(up, "attentions", None) or [None] * len(up.resnets)
        for resnet, attention in zip(up.resnets, attentions):
            skip = kept.pop()
            if features.shape[-2:] != skip.shape[-2:]:
                features = F.interpolate(features, size=skip.shape[-2:], mode="bicubic")
            features = resnet(torch.cat([features, skip], dim=1), emb)
            if attention is not None:
                features = attention(features, encoder_hidden_states=text).sample
        if up.upsamplers:
            features = up.upsamplers[0](features, kept[-1].shape[-2:])
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(features)))


def _inputs(height: int = 27, width: int = 19):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(1, 4, height, width, generator=generator), torch.randn(1, 5, TEXT_WIDTH, generator=generator)


@pytest.mark.parametrize("after_skip", [True, False], ids=["after-skip", "before-skip"])
@pytest.mark.parametrize("number, factor", [(1, 2.0), (3, 2.0), (3, 1.5), (6, 3.0), (8, 0.5), (11, 2.0)])
@torch.no_grad()
def test_the_hooks_make_comfyuis_loop_at_every_kind_of_block(unet, number, factor, after_skip):
    """Block 1 a resnet with its transformer, 3 a downsampler, 6 another, 8 a layer of the third level, 11 the
    last (the middle block takes its output); latents 27 x 19, whose levels' sizes are odd; 1.5 and 0.5 need the
    upsamplers' sizes given."""
    sample, text = _inputs()
    with applied([unet], shrink(number, factor, after_skip)):
        ours = unet(sample, 900, encoder_hidden_states=text).sample
    theirs = comfy(unet, sample, 900, text, number, factor, after_skip)
    plain = unet(sample, 900, encoder_hidden_states=text).sample
    assert (ours - theirs).abs().max() < 1e-5 < 1e-2 < (ours - plain).abs().max()


@torch.no_grad()
def test_controlnets_residuals_are_resized_to_what_they_are_added_to(unet):
    sample, text = _inputs()
    sizes = [tuple(sample.shape[-2:])]
    for down in unet.down_blocks:  # the full-size skip connections' sizes, as a ControlNet makes its residuals
        halved = tuple(-(-side // 2) for side in sizes[-1])
        sizes += [sizes[-1]] * len(down.resnets) + [halved] * bool(down.downsamplers)
    channels = [unet.conv_in.out_channels] + [module.out_channels if hasattr(module, "out_channels") else
                                              module.proj_out.out_features for _, module in input_blocks(unet)[1:]]
    generator = torch.Generator().manual_seed(2)
    residuals = [torch.randn(1, width, *size, generator=generator) for width, size in zip(channels, sizes)]
    middle = torch.randn(1, 64, *sizes[-1], generator=generator)
    with applied([unet], shrink(4)):
        ours = unet(sample, 900, encoder_hidden_states=text, down_block_additional_residuals=tuple(residuals),
                    mid_block_additional_residual=middle).sample
    theirs = comfy(unet, sample, 900, text, 4, 2.0, True, residuals, middle)
    assert (ours - theirs).abs().max() < 1e-5
    with applied([unet], shrink(4, factor=1.0)):  # nothing shrunk: the residuals added as the UNet adds them
        same = unet(sample, 900, encoder_hidden_states=text, down_block_additional_residuals=tuple(residuals),
                    mid_block_additional_residual=middle).sample
    assert torch.equal(same, unet(sample, 900, encoder_hidden_states=text,
                                  down_block_additional_residuals=tuple(residuals),
                                  mid_block_additional_residual=middle).sample)


@torch.no_grad()
def test_calls_outside_the_span_run_as_they_are_and_the_hooks_come_off(unet):
    sample, text = _inputs(16, 16)
    before = unet(sample, 500, encoder_hidden_states=text).sample
    with applied([unet], shrink(3)):
        during = unet(sample, 500, encoder_hidden_states=text).sample  # under end percent 0.35's timestep 649.35
    assert torch.equal(during, before)
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in unet.modules())


def test_the_span_the_second_phase_and_the_automatic_factor():
    """Percents of the schedule as ComfyUI's ``percent_to_sigma``: percent p is timestep (1 - p) x 999; 0 starts
    before the first call and 1 ends after the last. The second phase runs to 1.5 x the end at the factor's mean
    with 1; factor 0 is the latents' side over the UNet's own."""
    settings = shrink(factor=3.0, deep_shrink_start=0.2)
    assert [settings.factor_at(t, (32, 32), 16) for t in (999, 799, 700, 650, 649, 400)] == [None, 3, 3, 3, None,
                                                                                              None]
    second = shrink(factor=3.0, deep_shrink_phase2=True)
    assert [second.factor_at(t, (32, 32), 16) for t in (999, 650, 600, 475, 474)] == [3, 3, 2, 2, None]
    assert shrink(factor=0.0).factor_at(999, (32, 32), 16) == 2 and shrink(factor=0.0).factor_at(999, (8, 32), 8) == 2
    assert shrink(deep_shrink_start=0.0, deep_shrink_end=1.0).factor_at(0, (8, 8), 8) == 2


def test_a_block_number_past_the_unets_last_is_refused():
    """The tiny SD UNet has two levels of one layer: the first convolution, a resnet, a downsampler, a resnet with
    its transformer: blocks 1 to 3."""
    pipe = build_tiny_sd()
    assert len(input_blocks(pipe.unet)) == 4
    request = small(deep_shrink=True, deep_shrink_block=4)
    with pytest.raises(RequestError, match="has input blocks 1 to 3") as caught:
        run_pipeline(pipe, request, [1])
    assert caught.value.field == "deep_shrink_block"
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in pipe.unet.modules())


def small(**values) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "cfg_scale": 7.0,
                                "sampler": "Euler", **values})


@pytest.mark.parametrize("build", [build_tiny_sd, build_tiny_sdxl], ids=["sd", "sdxl"])
def test_it_changes_the_first_steps_of_the_pipelines(build):
    """At 96 x 96 (twice the tiny models' latents); the end at 0.35 shrinks the first of 4 steps, and an end at 0
    the first only too (its timestep is 999)."""
    pipe = build()
    plain = run_pipeline(pipe, small(width=96, height=96), [1], latent_output=True)
    shrunk = run_pipeline(pipe, small(width=96, height=96, deep_shrink=True, deep_shrink_block=2), [1],
                          latent_output=True)
    assert shrunk.shape == plain.shape and (shrunk - plain).abs().max() > 1e-3
    late = run_pipeline(pipe, small(width=96, height=96, deep_shrink=True, deep_shrink_block=2, deep_shrink_start=0.5,
                                    deep_shrink_end=0.6), [1], latent_output=True)
    assert torch.equal(late, plain)  # Euler's leading timesteps 751, 501, 251, 1: none at 399.6 to 499.5


def test_controlnets_guidance_reaches_the_shrunk_calls_in_a_pass(engine):
    """Every call shrunk (end percent 1): a unit's residuals still steer the picture, resized to the shrunk sizes,
    and hires fix's pass (without Deep Shrink) takes the unit's map at its own size."""
    from PIL import Image, ImageDraw

    circle = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(circle).ellipse((16, 16, 48, 48), fill="red")

    def picture(weight: float, **values):
        unit = {"model": "tiny-sd-control", "module": "canny", "image": circle, "weight": weight}
        request = GenerationRequest(prompt="a red circle", width=64, height=64, steps=4, seed=3, deep_shrink=True,
                                    deep_shrink_block=2, deep_shrink_end=1.0, controlnets=[unit], **values)
        return np.asarray(engine.generate(request, save=False).images[0], dtype=float)

    assert np.abs(picture(1.0) - picture(0.0)).mean() > 1
    assert picture(1.0, enable_hr=True, hr_scale=1.5, denoising_strength=0.5).shape == (96, 96, 3)


@pytest.mark.parametrize("values, field, words", [
    ({"deep_shrink_downscale": "bislerp"}, "deep_shrink_downscale", "Downscale Method is one of bicubic"),
    ({"deep_shrink_factor": 0.05}, "deep_shrink_factor", "0 (from the size) or at least 0.1"),
    ({"deep_shrink_block": 0}, "deep_shrink_block", "Block Number (Deep Shrink) must be between 1 and 32"),
    ({"deep_shrink_start": 0.5, "deep_shrink_end": 0.2}, "deep_shrink_start", "must not come after"),
    ({"deep_shrink": True, "sag_scale": 0.5}, "sag_scale", "Self-Attention Guidance reads a map"),
    ({"deep_shrink": True, "step_cache": 2}, "step_cache", "Deep Shrink may make at another size"),
])
def test_settings_it_cannot_use_are_refused(values, field, words):
    with pytest.raises(RequestError, match=re.escape(words)) as caught:
        small(**values)
    assert caught.value.field == field


def test_forges_infotext_keys_are_written_and_read_back_and_the_hires_pass_goes_without():
    request = small(deep_shrink=True, deep_shrink_block=4, deep_shrink_factor=1.5, deep_shrink_phase2=True,
                    deep_shrink_upscale="area", enable_hr=True, denoising_strength=0.5)
    text = request.infotext(1, "tiny")
    assert "kohya_hrfix_enabled: True, kohya_hrfix_block_number: 4, kohya_hrfix_downscale_factor: 1.5" in text
    assert "kohya_hrfix_downscale_after_skip: True" in text and "kohya_hrfix_upscale_method: area" in text
    assert GenerationRequest.from_infotext(text).shrink == request.shrink
    assert not request.hires_pass().deep_shrink
    forge = ("a cat\nSteps: 20, Sampler: Euler, kohya_hrfix_enabled: True, kohya_hrfix_block_number: 3, "
             "kohya_hrfix_downscale_factor: 2.0, kohya_hrfix_start_percent: 0.0, kohya_hrfix_end_percent: 0.35, "
             "kohya_hrfix_downscale_after_skip: False, kohya_hrfix_downscale_method: bicubic, "
             "kohya_hrfix_upscale_method: bicubic")  # Forge's first script: no second phase
    read = GenerationRequest.from_infotext(forge)
    assert read.deep_shrink and not read.deep_shrink_after_skip and not read.deep_shrink_phase2
    assert "kohya_hrfix" not in small().infotext(1, "tiny")


def test_xyz_axes_turn_it_on():
    cells = plan(small(), [("[Deep Shrink] Block Number", "2, 3"), ("[Deep Shrink] End Percent", "0.3, 0.5")]).cells
    assert (cells[0, 0, 0].deep_shrink_block, cells[1, 0, 0].deep_shrink_block) == (2, 3)
    assert (cells[0, 1, 0].deep_shrink_end, cells[1, 1, 0].deep_shrink) == (0.5, True)
