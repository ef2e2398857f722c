"""Request validation: every bad value gives RequestError with a readable message, never a crash."""

import math

import pytest

from pipelines.errors import RequestError
from pipelines.request import GenerationRequest


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("width", 65, "Width must be a multiple of 8"),
        ("height", 100, "Height must be a multiple of 8"),
        ("width", 56, "Width must be between 64 and 4096"),
        ("height", 4104, "Height must be between 64 and 4096"),
        ("steps", 0, "Steps must be between 1 and 150"),
        ("steps", 151, "Steps must be between 1 and 150"),
        ("steps", 2.5, "Steps must be a whole number"),
        ("steps", "many", "Steps must be a whole number"),
        ("cfg_scale", math.nan, "CFG scale must be a finite number"),
        ("cfg_scale", math.inf, "CFG scale must be a finite number"),
        ("cfg_scale", "high", "CFG scale must be a number"),
        ("batch_size", 9, "Batch size must be between 1 and 8"),
        ("batch_size", 0, "Batch size must be between 1 and 8"),
        ("batch_count", 0, "Batch count must be between 1 and 100"),
        ("seed", -2, "Seed must be between -1 and 4294967295"),
        ("seed", 2**32, "Seed must be between -1 and 4294967295"),
        ("seed", None, "Seed must be a whole number"),
        ("clip_skip", 0, "Clip skip must be between 1 and 12"),
        ("sampler", "Euler b", "Unknown sampler 'Euler b'"),
        ("scheduler", "Wobbly", "Unknown schedule type 'Wobbly'"),
        ("task", "paint", "Unknown task 'paint'"),
        ("denoising_strength", 1.5, "Denoising strength must be between 0 and 1"),
    ],
)
def test_bad_values_raise_request_error(field, value, message):
    with pytest.raises(RequestError, match=message.replace("(", r"\(")) as error:
        GenerationRequest(**{field: value})
    assert error.value.field == field  # an API can point at the value to change


def test_values_are_coerced_from_widget_and_json_types():
    request = GenerationRequest(steps=20.0, width="512", height=768.0, seed=3.0, cfg_scale="7.5", prompt=None)
    assert (request.steps, request.width, request.height, request.seed) == (20, 512, 768, 3)
    assert request.cfg_scale == 7.5 and request.prompt == ""
    assert isinstance(request.steps, int)


def test_request_is_frozen():
    request = GenerationRequest()
    with pytest.raises(AttributeError):
        request.steps = 5
    with pytest.raises(TypeError):
        request.extensions["x"] = 1


def test_old_sampler_names_split_into_sampler_and_schedule_type():
    request = GenerationRequest(sampler="DPM++ 2M Karras")
    assert (request.sampler, request.scheduler) == ("DPM++ 2M", "Karras")
    assert GenerationRequest(sampler="k_euler_a").sampler == "Euler a"
    assert GenerationRequest(sampler="EULER", scheduler="karras").scheduler == "Karras"


def test_schedule_type_the_sampler_cannot_use_is_refused():
    with pytest.raises(RequestError, match="does not support the Karras schedule type"):
        GenerationRequest(sampler="DDIM", scheduler="Karras")


def test_seeds_follow_a1111_rule():
    request = GenerationRequest(seed=10, batch_size=3, batch_count=2)
    assert request.seeds() == [10, 11, 12, 13, 14, 15]
    assert GenerationRequest(seed=2**32 - 1, batch_size=2).seeds() == [2**32 - 1, 0]


def test_random_seed_is_resolved_once():
    request = GenerationRequest(seed=-1).with_seed()
    assert 0 <= request.seed < 2**32
    assert request.with_seed() is request


def test_from_values_ignores_ui_only_keys():
    request = GenerationRequest.from_values({"prompt": "a cat", "model_name": "x", "steps": 3})
    assert request.prompt == "a cat" and request.steps == 3
