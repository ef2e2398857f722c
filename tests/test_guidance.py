"""FreeU, Rescale CFG, PAG and A1111's negative guidance minimum sigma and Skip Early CFG (``pipelines/freeu.py``,
``cfg_rescale.py``, ``pag.py``, ``negative_guidance.py``) on tiny random pipelines: the rules themselves against
diffusers' own code, every UNet pipeline, the request's checks and infotext, the X/Y/Z axes. What they do to a
picture is checked on the embedded model (``test_embedded_model.py``)."""

from dataclasses import replace
from typing import Callable

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPAGPipeline, StableDiffusionXLPAGPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from PIL import Image

from pipelines.cfg_rescale import rescaled
from pipelines.engine import Engine
from pipelines.freeu import amplified
from pipelines.errors import RequestError
from pipelines.generate import run_pipeline
from pipelines.outputs import OutputWriter
from pipelines.request import GenerationRequest
from pipelines.xyz import plan
from training.single_file import build_tiny_sdxl_like
from training.tiny_random import build_tiny_sd, build_tiny_sdxl

SCALE, PHI = 9.0, 0.7


def guided(pair: torch.Tensor) -> torch.Tensor:
    """What a pipeline's CFG makes of ``[unprompted, prompted]``."""
    unprompted, prompted = pair.chunk(2)
    return unprompted + SCALE * (prompted - unprompted)


def test_a_v_prediction_is_rescaled_by_diffusers_rule():
    torch.manual_seed(0)
    out, sample = torch.randn(4, 4, 8, 8), torch.randn(2, 4, 8, 8).repeat(2, 1, 1, 1)
    handed = rescaled(out, sample, torch.tensor(500.0), 2, PHI, SCALE,
                      EulerDiscreteScheduler(prediction_type="v_prediction"))
    expected = rescale_noise_cfg(guided(out), out[2:], guidance_rescale=PHI)
    assert torch.allclose(guided(handed), expected, atol=1e-5)
    assert not torch.allclose(guided(out), expected, atol=1e-2)  # it does rescale


def test_an_epsilon_prediction_is_rescaled_as_its_v_prediction():
    """As ComfyUI does: the rule on the v-predictions at the step's noise level; an inpainting UNet's input has
    the latents first."""
    torch.manual_seed(0)
    scheduler = EulerDiscreteScheduler(prediction_type="epsilon")
    out, latents = torch.randn(4, 4, 8, 8), torch.randn(2, 4, 8, 8)
    sample = torch.cat([latents, torch.randn(2, 5, 8, 8)], dim=1).repeat(2, 1, 1, 1)
    handed = rescaled(out, sample, torch.tensor(300.0), 2, PHI, SCALE, scheduler)
    signal = scheduler.alphas_cumprod[300]

    def as_v(epsilon: torch.Tensor) -> torch.Tensor:
        return (epsilon - (1 - signal).sqrt() * latents) / signal.sqrt()

    expected = rescale_noise_cfg(as_v(guided(out)), as_v(out[2:]), guidance_rescale=PHI)
    assert torch.allclose(as_v(guided(handed)), expected, atol=1e-4)


def small(**values) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle", "negative_prompt": "blue", "steps": 3, "width": 64,
                                "height": 64, "cfg_scale": SCALE, "sampler": "Euler", **values})


def test_a_v_prediction_pipeline_makes_the_picture_of_diffusers_guidance_rescale():
    pipe = build_tiny_sd()
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    ours = run_pipeline(pipe, small(rescale_cfg=PHI), [1, 2], latent_output=True)
    theirs = pipe(prompt="a red circle", negative_prompt="blue", num_inference_steps=3, width=64, height=64,
                  guidance_scale=SCALE, guidance_rescale=PHI, num_images_per_prompt=2, output_type="latent",
                  generator=[torch.Generator().manual_seed(seed) for seed in (1, 2)]).images
    plain = run_pipeline(pipe, small(), [1, 2], latent_output=True)
    assert (ours - theirs).abs().max() < 1e-4 < (plain - theirs).abs().max()
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"  # its own UNet back after the pass


@pytest.fixture(scope="module")
def engine(registry, tmp_path_factory):
    return Engine(registry, OutputWriter(tmp_path_factory.mktemp("out"), enabled=False))


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=float)


@pytest.mark.parametrize("values", [
    {"model": "tiny-sd"},
    {"model": "tiny-sdxl", "prompt": "a red circle AND a blue square:0.5"},  # composable parts
    {"model": "tiny-sd", "task": "img2img", "init_image": Image.new("RGB", (64, 64), "red"),
     "denoising_strength": 0.7},
    {"model": "tiny-sd", "task": "inpaint", "init_image": Image.new("RGB", (64, 64), "red"),
     "mask": Image.new("L", (64, 64), 255), "denoising_strength": 1.0},
], ids=["txt2img", "composable-sdxl", "img2img", "inpaint"])
def test_rescale_freeu_and_pag_change_every_unet_pipelines_picture(engine, values):
    plain = engine.generate(small(seed=3, **values))
    for extra in ({"rescale_cfg": PHI}, {"freeu": True}, {"freeu": True, "freeu_version": 2}, {"pag_scale": 3.0},
                  {"pag_scale": 3.0, "cfg_scale": 1.0}):
        # a random model's predictions are alike whatever it is given, so the changes are small
        changed = engine.generate(small(seed=3, **{**values, **extra}))
        assert not np.array_equal(pixels(changed), pixels(plain)), extra
    assert "Rescale CFG" not in plain.infotexts[0] and "PAG" not in plain.infotexts[0]
    unguided = [engine.generate(small(seed=3, cfg_scale=1.0, **values, **extra))
                for extra in ({}, {"rescale_cfg": PHI})]
    assert np.array_equal(*map(pixels, unguided))  # no unprompted half: nothing to rescale


def diffusers_freeu(pipe, request, on: Callable[[int], bool] = lambda step: True) -> torch.Tensor:
    """The request's latents without Easel's FreeU, with diffusers' ``enable_freeu`` (its factors) on the steps
    ``on`` says (turned on or off by a step callback)."""
    def turn(step: int) -> None:
        if on(step):
            pipe.unet.enable_freeu(**{name: getattr(request, f"freeu_{name}") for name in ("b1", "b2", "s1", "s2")})
        else:
            pipe.unet.disable_freeu()

    turn(0)
    try:
        return pipe(prompt=request.prompt, negative_prompt=request.negative_prompt, num_inference_steps=request.steps,
                    width=64, height=64, guidance_scale=SCALE, output_type="latent",
                    generator=[torch.Generator().manual_seed(1)],
                    callback_on_step_end=lambda p, step, t, tensors: (turn(step + 1), tensors)[1]).images
    finally:
        pipe.unet.disable_freeu()


@pytest.mark.parametrize("build", [build_tiny_sd, build_tiny_sdxl], ids=["sd", "sdxl"])
def test_freeu_version_1_is_diffusers_own_for_the_pass_and_taken_off_after(build):
    """Easel's hooks on the stages' resnets split their input where diffusers' blocks joined it: the same latents
    as diffusers' ``enable_freeu`` (UpBlock2D stages in SD, CrossAttnUpBlock2D in SDXL)."""
    pipe = build()
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    request = small(freeu=True, freeu_b1=1.5, freeu_s2=0.5)
    ours = run_pipeline(pipe, request, [1], latent_output=True)
    assert not any(resnet._forward_pre_hooks for block in pipe.unet.up_blocks for resnet in block.resnets)
    plain = run_pipeline(pipe, replace(request, freeu=False), [1], latent_output=True)
    assert torch.allclose(ours, diffusers_freeu(pipe, request), atol=1e-5) and not torch.allclose(ours, plain)


def test_freeus_start_and_end_bound_the_steps_it_acts_on():
    """Forge's rule: step i of n acts when start <= i / (n - 1) <= end; against diffusers' FreeU turned on and off
    between steps. An end before the second step acts on the first alone, a start after it on the later ones."""
    pipe = build_tiny_sd()
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    request = small(freeu=True, freeu_b1=1.8, freeu_s1=0.3)  # 3 steps: at 0, 0.5 and 1
    first = run_pipeline(pipe, replace(request, freeu_end=0.4), [1], latent_output=True)
    later = run_pipeline(pipe, replace(request, freeu_start=0.4), [1], latent_output=True)
    assert torch.allclose(first, diffusers_freeu(pipe, request, lambda step: step == 0), atol=1e-5)
    assert torch.allclose(later, diffusers_freeu(pipe, request, lambda step: step > 0), atol=1e-5)
    assert not torch.allclose(first, later, atol=1e-3)


def test_freeu_version_2_amplifies_each_place_by_its_channel_mean_between_1_and_b():
    """ComfyUI's FreeU_V2 and Forge's rule: the place whose mean over the channels is the picture's lowest is kept,
    the highest amplified by B, one halfway by half of B's gain; version 1 amplifies every place by B. The second
    half of the channels is kept by both."""
    means = torch.tensor([0.0, 1.0, 0.5, 0.25]).reshape(1, 1, 2, 2)
    backbone = torch.cat([means.expand(1, 4, 2, 2), 2 * means.expand(1, 4, 2, 2) + 1])  # two pictures of 4 channels
    second = amplified(backbone, 1.5, 2)
    assert torch.allclose(second[0, :2], backbone[0, :2] * torch.tensor([1.0, 1.5, 1.25, 1.125]).reshape(1, 2, 2))
    assert torch.allclose(second[1, :2], backbone[1, :2] * torch.tensor([1.0, 1.5, 1.25, 1.125]).reshape(1, 2, 2))
    assert torch.equal(second[:, 2:], backbone[:, 2:])
    first = amplified(backbone, 1.5, 1)
    assert torch.allclose(first[:, :2], backbone[:, :2] * 1.5) and torch.equal(first[:, 2:], backbone[:, 2:])


@pytest.mark.parametrize("build, reference", [(build_tiny_sd, StableDiffusionPAGPipeline),
                                              (build_tiny_sdxl, StableDiffusionXLPAGPipeline)], ids=["sd", "sdxl"])
@pytest.mark.parametrize("scale", [SCALE, 1.0], ids=["cfg", "no-cfg"])
def test_pag_makes_the_picture_of_diffusers_pag_pipelines(build, reference, scale):
    pipe = build()
    ours = run_pipeline(pipe, small(cfg_scale=scale, pag_scale=3.0), [1, 2], latent_output=True)
    theirs = reference(**pipe.components, pag_applied_layers=["mid"])(
        prompt="a red circle", negative_prompt="blue", num_inference_steps=3, width=64, height=64,
        guidance_scale=scale, pag_scale=3.0, num_images_per_prompt=2, output_type="latent",
        generator=[torch.Generator().manual_seed(seed) for seed in (1, 2)]).images
    plain = run_pipeline(pipe, small(cfg_scale=scale), [1, 2], latent_output=True)
    assert (ours - theirs).abs().max() < 1e-4 < (plain - theirs).abs().max()
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}  # put back


@pytest.mark.parametrize("name, field", [("PAG", "pag_scale"), ("SAG", "sag_scale")])
def test_pag_and_sag_on_a_unet_without_a_middle_block_are_refused(name, field):
    """KOALA-700M's UNet has no middle block, so nothing for PAG to perturb, no attention map for SAG to read."""
    pipe = build_tiny_sdxl_like(mid_block=False)
    with pytest.raises(RequestError, match=f"{name} needs self-attention in the UNet's middle block") as caught:
        run_pipeline(pipe, small(**{field: 0.75}), [1], latent_output=True)
    assert caught.value.field == field


def test_the_infotext_says_what_ran_and_reads_back():
    request = small(seed=5, model="m", rescale_cfg=0.5, pag_scale=2.5, freeu=True, freeu_b1=1.1, freeu_s1=0.75)
    text = request.infotext(5, "m")
    assert "Rescale CFG: 0.5, PAG scale: 2.5, FreeU: True, FreeU B1: 1.1, FreeU B2: 1.4, FreeU S1: 0.75, FreeU S2: " \
           "0.2" in text
    assert GenerationRequest.from_infotext(text, sampler="Euler") == request
    later = small(seed=5, model="m", freeu=True, freeu_start=0.2, freeu_end=0.8, freeu_version=2)
    assert "FreeU S2: 0.2, FreeU start: 0.2, FreeU end: 0.8, FreeU version: 2" in later.infotext(5, "m")
    assert GenerationRequest.from_infotext(later.infotext(5, "m"), sampler="Euler") == later
    plain = small(seed=5, freeu_b1=1.9).infotext(5, "m")  # off: the factors are not written
    assert "FreeU" not in plain and "Rescale" not in plain
    assert not GenerationRequest.from_infotext(plain).freeu


@pytest.mark.parametrize("values, field, message", [
    ({"rescale_cfg": 1.5}, "rescale_cfg", "Rescale CFG must be between 0 and 1, got 1.5"),
    ({"rescale_cfg": "much"}, "rescale_cfg", "Rescale CFG must be a number"),
    ({"pag_scale": -1}, "pag_scale", "PAG scale must be between 0 and 100, got -1"),
    ({"skip_early_cond": 1.5}, "skip_early_cond", "Ignore negative prompt during early sampling must be between 0 "
                                                   "and 1"),
    ({"freeu_b1": 3}, "freeu_b1", r"B1 \(FreeU\) must be between 0.01 and 2, got 3"),
    ({"freeu_s2": 0}, "freeu_s2", r"S2 \(FreeU\) must be between 0.01 and 4, got 0"),  # 0 would turn it off
    ({"freeu_version": 3}, "freeu_version", r"Version \(FreeU\) must be between 1 and 2, got 3"),
    ({"freeu_version": 1.5}, "freeu_version", "FreeU's version must be 1 or 2, got 1.5"),
    ({"soft_contrast_boost": 40}, "soft_contrast_boost", r"Transition contrast boost \(soft inpainting\)"),
])
def test_out_of_range_settings_are_refused_naming_the_field(values, field, message):
    with pytest.raises(RequestError, match=message) as caught:
        small(**values)
    assert caught.value.field == field


def test_the_xyz_axes_set_the_factor_and_freeus_turn_it_on():
    cells = plan(small(), [("Rescale CFG", "0-1 [3]"), ("FreeU B1", "1.2, 1.5"), ("PAG scale", "0, 3")]).cells
    assert plan(small(), [("Negative Guidance minimum sigma", "2")]).cells[0, 0, 0].s_min_uncond == 2.0
    early = plan(small(), [("Ignore negative prompt during early sampling", "0, 0.3")]).cells
    assert (early[0, 0, 0].skip_early_cond, early[1, 0, 0].skip_early_cond) == (0.0, 0.3)
    assert [cells[i, 0, 0].rescale_cfg for i in range(3)] == [0.0, 0.5, 1.0]
    assert (cells[0, 1, 0].freeu, cells[0, 1, 0].freeu_b1, cells[0, 1, 0].freeu_b2) == (True, 1.5, 1.4)
    assert (cells[0, 0, 0].pag_scale, cells[0, 0, 1].pag_scale) == (0.0, 3.0)


def unet_rows(engine, **values) -> tuple[list[int], str]:
    """The rows of each tiny-sd UNet call of a 4-step picture, and its infotext."""
    from unet_calls import UNetCalls

    with UNetCalls(engine, "tiny-sd") as calls:
        result = engine.generate(small(model="tiny-sd", steps=4, seed=3, **values))
    return [call["sample"].shape[0] for call in calls["tiny-sd"]], result.infotexts[0]


def test_ngms_leaves_the_unprompted_half_out_of_every_other_call_below_its_sigma(engine):
    """A1111's rule: odd calls at a noise level under the setting (every call with *all steps*); written into the
    infotext once it happened."""
    plain, infotext = unet_rows(engine)
    assert plain == [2, 2, 2, 2] and "NGMS" not in infotext
    skipped, infotext = unet_rows(engine, s_min_uncond=15)  # above SD's first sigma (14.6): every odd call
    assert skipped == [2, 1, 2, 1] and "NGMS: 15" in infotext and "NGMS all steps" not in infotext
    assert GenerationRequest.from_infotext(infotext).s_min_uncond == 15
    late, infotext = unet_rows(engine, s_min_uncond=1)  # only the last steps are under sigma 1
    assert late == [2, 2, 2, 1] and "NGMS: 1" in infotext
    never, infotext = unet_rows(engine, s_min_uncond=0.01)  # set, but never under it: A1111 writes nothing
    assert never == [2, 2, 2, 2] and "NGMS" not in infotext
    every, infotext = unet_rows(engine, s_min_uncond=15, s_min_uncond_all=True)
    assert every == [1, 1, 1, 1] and "NGMS: 15, NGMS all steps: True" in infotext
    assert GenerationRequest.from_infotext(infotext).s_min_uncond_all
    assert unet_rows(engine, s_min_uncond_all=True) == ([2, 2, 2, 2], plain_infotext(engine))  # without NGMS: nothing


def plain_infotext(engine) -> str:
    return engine.generate(small(model="tiny-sd", steps=4, seed=3)).infotexts[0]


def test_skip_early_cfg_leaves_the_unprompted_half_out_of_the_first_share_of_the_passs_calls(engine):
    """A1111's rule: while the calls made are at most the setting's share of the pass's calls (the first always),
    before NGMS's; second-order samplers' and img2img's calls counted as made."""
    early, infotext = unet_rows(engine, skip_early_cond=0.5)  # calls 0, 1, 2 of 4 (2 / 4 <= 0.5)
    assert early == [1, 1, 1, 2] and "Skip Early CFG: 0.5" in infotext
    assert GenerationRequest.from_infotext(infotext).skip_early_cond == 0.5
    both, infotext = unet_rows(engine, skip_early_cond=0.25, s_min_uncond=15)  # then NGMS's odd call 3
    assert both == [1, 1, 2, 1] and "NGMS: 15" in infotext and "Skip Early CFG: 0.25" in infotext
    heun, _ = unet_rows(engine, skip_early_cond=0.5, sampler="Heun")  # 7 calls for 4 steps: 0 to 3 (3 / 7)
    assert heun == [1, 1, 1, 1, 2, 2, 2]
    picture = {"task": "img2img", "init_image": Image.new("RGB", (64, 64), "red"), "denoising_strength": 0.5}
    assert unet_rows(engine, skip_early_cond=0.5, **picture)[0] == [1, 1]  # 2 calls: 0 and 1 (1 / 2)
    unguided, infotext = unet_rows(engine, skip_early_cond=0.5, cfg_scale=1.0)  # no unprompted half: nothing
    assert unguided == [1, 1, 1, 1] and "Skip Early CFG" not in infotext


def test_skip_early_cfg_on_every_call_is_the_picture_without_cfg(engine):
    """Every call guided by the prompt alone: the picture of CFG scale 1, to the pixel; 0 is the plain picture."""
    skipped = engine.generate(small(model="tiny-sd", seed=3, skip_early_cond=1.0))
    assert np.array_equal(pixels(skipped), pixels(engine.generate(small(model="tiny-sd", seed=3, cfg_scale=1.0))))
    plain = engine.generate(small(model="tiny-sd", seed=3))
    assert np.array_equal(pixels(engine.generate(small(model="tiny-sd", seed=3, skip_early_cond=0))), pixels(plain))
    assert not np.array_equal(pixels(skipped), pixels(plain))


def test_pag_pushes_the_calls_of_its_span_at_a_scale_its_attenuation_wears_down(engine):
    """Forge's rule: a call at share call / (calls - 1) of the pass is pushed when it lies from PAG start to PAG end,
    at the scale less the attenuation's % of it per call pushed before; a call not pushed has no perturbed rows (2
    rows, not 3)."""
    assert unet_rows(engine, pag_scale=2.0)[0] == [3, 3, 3, 3]
    span, infotext = unet_rows(engine, pag_scale=2.0, pag_start=0.3, pag_end=0.7)  # calls 1 and 2 (1/3, 2/3)
    assert span == [2, 3, 3, 2] and "PAG scale: 2, PAG start: 0.3, PAG end: 0.7" in infotext
    worn, infotext = unet_rows(engine, pag_scale=2.0, pag_attenuation=50)  # 2, then 1, then 0: no more rows
    assert worn == [3, 3, 2, 2] and "PAG attenuation: 50" in infotext and "PAG start" not in infotext
    assert GenerationRequest.from_infotext(infotext, sampler="Euler").pag_attenuation == 50
    heun, _ = unet_rows(engine, pag_scale=2.0, pag_end=0.5, sampler="Heun")  # 7 calls: 0 to 3 (3 / 6)
    assert heun == [3, 3, 3, 3, 2, 2, 2]
    assert unet_rows(engine, pag_start=0.5)[0] == [2, 2, 2, 2]  # no scale: nothing


def test_a_pag_worn_down_after_one_call_is_pag_on_the_first_call_alone(engine):
    """Attenuation 100 pushes the first call at the full scale and no other, as a span ending at the first call
    does: the same picture, unlike PAG on every call and unlike none."""
    once = pixels(engine.generate(small(model="tiny-sd", seed=3, pag_scale=3.0, pag_attenuation=100)))
    first = pixels(engine.generate(small(model="tiny-sd", seed=3, pag_scale=3.0, pag_end=0.0)))
    every = pixels(engine.generate(small(model="tiny-sd", seed=3, pag_scale=3.0)))
    plain = pixels(engine.generate(small(model="tiny-sd", seed=3)))
    assert np.array_equal(once, first) and not np.array_equal(once, every) and not np.array_equal(once, plain)


def test_forges_pag_and_freeu_keys_read_back_where_its_scripts_were_enabled():
    """Its PAG's ``pagi_`` keys, its FreeU's ``freeu_`` ones (its FreeU is version 2)."""
    text = "a red circle\nSteps: 4, Sampler: Euler, Seed: 3, pagi_enabled: True, pagi_scale: 2.5, " \
           "pagi_attenuation: 10, pagi_start_step: 0.15, pagi_end_step: 0.6, freeu_enabled: True, freeu_b1: 1.01, " \
           "freeu_b2: 1.02, freeu_s1: 0.99, freeu_s2: 0.95, freeu_start: 0.1, freeu_end: 0.9"
    request = GenerationRequest.from_infotext(text)
    assert (request.pag_scale, request.pag_attenuation, request.pag_start, request.pag_end) == (2.5, 10, 0.15, 0.6)
    assert (request.freeu, request.freeu_b1, request.freeu_s2, request.freeu_start, request.freeu_end,
            request.freeu_version) == (True, 1.01, 0.95, 0.1, 0.9, 2)
    off = GenerationRequest.from_infotext(text.replace("_enabled: True", "_enabled: False"))
    assert off.pag_scale == 0 and not off.freeu


@pytest.mark.parametrize("values, field, message", [
    ({"pag_scale": 3.0, "pag_start": 0.6, "pag_end": 0.4}, "pag_start",
     r"PAG start \(0.6\) must not come after PAG end \(0.4\)"),
    ({"freeu": True, "freeu_start": 0.5, "freeu_end": 0.2}, "freeu_start",
     r"FreeU start \(0.5\) must not come after FreeU end \(0.2\)"),
], ids=["pag", "freeu"])
def test_a_span_that_ends_before_it_starts_is_refused(values, field, message):
    with pytest.raises(RequestError, match=message) as caught:
        small(**values)
    assert caught.value.field == field
