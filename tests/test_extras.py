"""The Extras tab's engine: a picture upscaled by one upscaler, blended with a second, sized and saved as A1111's."""

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import RequestError
from pipelines.extras import ExtrasRequest
from pipelines.infotext import PNG_KEY


@pytest.fixture
def picture():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    image.info[PNG_KEY] = "a cat\nSteps: 2, Seed: 1, Size: 40x30"
    return image


def test_scale_by_runs_an_x4_file_as_often_as_needed_and_keeps_the_parameters(engine, picture):
    with engine.registry.lease(engine.registry.resolve_upscaler("tiny-x4")) as upscaler:
        calls = []
        hook = upscaler.pipe.net.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    try:
        twice, text, path = engine.postprocess(ExtrasRequest(picture, upscaling_resize=8, upscaler_1="tiny-x4"))
    finally:
        hook.remove()
    assert twice.size == (320, 240) and [shape[-2:] for shape in calls] == [(30, 40), (120, 160)]  # x4, x4, to 8x
    assert text == "Postprocess upscale by: 8, Postprocess upscaler: tiny-x4"
    assert path.parent.parent.name == "extras-images" and path.name == f"{int(path.stem):05d}.png"
    with Image.open(path) as saved:
        assert saved.info[PNG_KEY] == picture.info[PNG_KEY] and saved.info["postprocessing"] == text


def test_scale_to_crops_or_stretches_and_a_second_upscaler_blends_in(engine, picture):
    def run(**values):
        return np.asarray(engine.postprocess(ExtrasRequest(picture, **values), save=False)[0], dtype=np.int16)

    cropped = run(resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=64, upscaler_1="Lanczos")
    stretched = run(resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=64, upscaling_crop=False,
                    upscaler_1="Lanczos")
    assert cropped.shape == stretched.shape == (64, 64, 3) and np.abs(cropped - stretched).mean() > 5
    nearest, lanczos = run(upscaler_1="Nearest"), run(upscaler_1="Lanczos")
    half = run(upscaler_1="Nearest", upscaler_2="Lanczos", extras_upscaler_2_visibility=0.5)
    assert np.abs(half - (nearest + lanczos) / 2).max() <= 1
    assert np.array_equal(run(), np.asarray(picture))  # None: the picture as it is


@pytest.mark.parametrize("values, field", [
    ({"upscaler_1": "nope"}, "upscaler_1"), ({"upscaler_2": "Latent"}, "upscaler_2"),
    ({"upscaling_resize": 9}, "upscaling_resize"), ({"resize_mode": 2}, "resize_mode"),
    ({"resize_mode": 1, "upscaling_resize_w": 10}, "upscaling_resize_w"),
])
def test_bad_extras_settings_are_refused_by_field(engine, picture, values, field):
    with pytest.raises(RequestError) as refused:
        engine.postprocess(ExtrasRequest(picture, **values), save=False)
    assert refused.value.field == field
