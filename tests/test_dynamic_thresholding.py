"""Dynamic Thresholding (``pipelines/dynamic_thresholding.py``): the extension's rule on hand-made denoised pictures,
its schedules, the pipelines' pictures it leaves alone and changes, the request's checks, infotext, X/Y/Z axes. What
it does to a burnt picture is checked on the embedded model (``test_embedded_model.py``)."""

import math

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from pipelines.dynamic_thresholding import DEFAULTS, FIELDS, DynamicThresholding, scheduled
from pipelines.errors import RequestError
from pipelines.generate import run_pipeline
from pipelines.request import GenerationRequest
from pipelines.xyz import plan
from training.tiny_random import build_tiny_sd

SCALE = 9.0


def thresholding(**values) -> DynamicThresholding:
    return DynamicThresholding(**{**{name: DEFAULTS[name] for name in FIELDS[1:]}, **values})


X = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2)  # the prompted picture; the unprompted one is 0


@pytest.mark.parametrize("values, expected", [
    ({}, 5 * X + 2.5),  # the mimic scale's spread about the CFG picture's mean (5)
    ({"dt_variability_measure": "STD"}, 5 * X + 2.5),
    ({"dt_scaling_startpoint": "ZERO"}, 5 * X),  # scaled from 0
    ({"dt_threshold_percentile": 50.0}, torch.tensor([-2.5, 1.25, 8.75, 12.5]).reshape(1, 1, 2, 2)),  # clamped at 10
    ({"dt_interpolate_phi": 0.0}, 10 * X),  # plain CFG
    ({"dt_interpolate_phi": 0.5}, (5 * X + 2.5 + 10 * X) / 2),
], ids=["mean-ad", "mean-std", "zero", "percentile", "phi-0", "phi-half"])
def test_the_rule_brings_cfgs_picture_to_the_mimic_scales_spread(values, expected):
    """CFG 10 makes 10x; mimic scale 5 spreads 5x about 2.5, so the guided picture becomes 5x + 2.5 (at the 50th
    percentile the centred CFG picture, -15 -5 5 15, is clamped at 10 first)."""
    made = thresholding(dt_mimic_scale=5.0, **values).denoised(torch.zeros_like(X), X, 10.0, share=0.0)
    assert torch.allclose(made, expected)


def test_separate_feature_channels_measures_each_channel_and_each_picture_by_itself():
    prompted = torch.cat([X, 3 * X], dim=1)  # channel 2 spreads three times as far
    apart = thresholding(dt_mimic_scale=5.0).denoised(torch.zeros_like(prompted), prompted, 10.0, 0.0)
    assert torch.allclose(apart, torch.cat([5 * X + 2.5, 15 * X + 7.5], dim=1))
    together = thresholding(dt_mimic_scale=5.0, dt_separate_feature_channels=False)
    pair = together.denoised(torch.zeros(2, 2, 2, 2), torch.cat([prompted, 2 * prompted]), 10.0, 0.0)
    assert torch.allclose(pair[:1], together.denoised(torch.zeros(1, 2, 2, 2), prompted, 10.0, 0.0))


@pytest.mark.parametrize("mode, share, expected", [
    ("Constant", 0.5, 10.0), ("Linear Down", 0.25, 2 + 8 * 0.75), ("Linear Up", 0.25, 2 + 8 * 0.25),
    ("Cosine Down", 1.0, 2 + 8 * math.cos(1.5707)), ("Half Cosine Up", 0.5, 2 + 8 * (1 - math.cos(0.5))),
    ("Power Up", 0.5, 2 + 8 * 0.25), ("Power Down", 0.5, 2 + 8 * 0.75), ("Sawtooth", 0.75, 2 + 8 * 0.5),
    ("Linear Repeating", 0.125, 2 + 8 * 0.5), ("Cosine Repeating", 0.125, 2 + 8 * 0.5),
])
def test_schedules_run_from_their_minimum_to_the_scale(mode, share, expected):
    assert scheduled(10.0, mode, 2.0, 2.0, share) == pytest.approx(expected, abs=1e-4)


def small(**values) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle", "negative_prompt": "blue", "steps": 3, "width": 64,
                                "height": 64, "cfg_scale": SCALE, "sampler": "Euler", **values})


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_a_mimic_scale_equal_to_the_cfg_scale_leaves_the_picture_and_a_lower_one_changes_it(prediction):
    """At the CFG scale itself, no percentile clamped, the rule gives CFG's own denoised picture back: the plain
    latents, for an epsilon and a v-prediction model (each turned into pictures and back at every step)."""
    pipe = build_tiny_sd()
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, prediction_type=prediction)
    plain = run_pipeline(pipe, small(), [1, 2], latent_output=True)
    same = run_pipeline(pipe, small(dynamic_thresholding=True, dt_mimic_scale=SCALE), [1, 2], latent_output=True)
    lower = run_pipeline(pipe, small(dynamic_thresholding=True, dt_mimic_scale=3.0), [1, 2], latent_output=True)
    assert (same - plain).abs().max() < 1e-3 < (lower - plain).abs().max()
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"  # its own UNet back after the pass


def test_the_infotext_has_the_extensions_keys_and_reads_back():
    request = small(seed=5, model="m", dynamic_thresholding=True, dt_mimic_scale=5, dt_cfg_mode="Power Up",
                    dt_cfg_scale_min=3, dt_sched_val=2, dt_separate_feature_channels=False)
    text = request.infotext(5, "m")
    assert "Dynamic thresholding enabled: True, Mimic scale: 5, Separate Feature Channels: False, Scaling " \
           "Startpoint: MEAN, Variability Measure: AD, Interpolate Phi: 1, Threshold percentile: 100, CFG mode: " \
           "Power Up, CFG scale minimum: 3, Scheduler value: 2" in text
    assert GenerationRequest.from_infotext(text, sampler="Euler") == request
    assert "Mimic" not in small(dt_mimic_scale=5).infotext(5, "m")  # off: nothing written


@pytest.mark.parametrize("values, field, message", [
    ({"dt_mimic_mode": "Wobbly"}, "dt_mimic_mode", "Mimic Scale Scheduler is one of Constant, Linear Down"),
    ({"dt_variability_measure": "MAD"}, "dt_variability_measure", "Variability Measure is one of AD, STD"),
    ({"dt_threshold_percentile": 50}, "dt_threshold_percentile",
     r"Top percentile of latents to clamp \(Dynamic Thresholding\) must be between 90 and 100, got 50"),
])
def test_bad_settings_are_refused_naming_the_field(values, field, message):
    with pytest.raises(RequestError, match=message) as caught:
        small(**values)
    assert caught.value.field == field


def test_the_xyz_axes_set_the_mimic_scale_turning_it_on_and_its_options():
    cells = plan(small(), [("[DynThres] Mimic Scale", "0, 5"), ("[DynThres] CFG Scheduler", "Constant, Linear Up")])
    first, second = cells.cells[0, 0, 0], cells.cells[1, 1, 0]
    assert (first.dynamic_thresholding, second.dynamic_thresholding, second.dt_mimic_scale) == (False, True, 5.0)
    assert second.dt_cfg_mode == "Linear Up"
