"""img2img and inpainting: A1111's resize modes, mask preparation, masked content, and the engine paths."""

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import RequestError
from pipelines.images import fill_masked, match_colours, prepare_mask, resize_image
from pipelines.request import GenerationRequest


def gradient(width=80, height=40):
    x = np.linspace(0, 255, width, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(x, (height, 1))] * 3, axis=-1))


def square_mask(size=64, box=(16, 16, 48, 48)):
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, box)
    return mask


def test_resize_modes():
    image = gradient(80, 40)  # 2:1 into a square
    stretched, cropped, filled = (resize_image(image, 64, 64, mode) for mode in (0, 1, 2))
    assert stretched.size == cropped.size == filled.size == (64, 64)
    left = lambda im: np.asarray(im)[32, 0, 0]  # noqa: E731
    assert left(stretched) < 10 and left(cropped) > 30  # cropping drops the dark left edge
    rows = np.asarray(filled)[:, 32, 0]
    assert np.ptp(rows[:16]) <= 2 and np.ptp(rows[-16:]) <= 2  # margins are stretched edge rows


def test_mask_is_inverted_blurred_and_taken_from_alpha():
    def mask_for(mask, **values):
        return np.asarray(prepare_mask(GenerationRequest(width=64, height=64, mask=mask, **values)))

    mask = mask_for(square_mask(), mask_blur=0, inpainting_mask_invert=True)
    assert mask[32, 32] == 0 and mask[0, 0] == 255
    assert 0 < mask_for(square_mask(), mask_blur=4)[32, 15] < 255
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 255), (0, 0, 10, 10))
    painted = mask_for(layer, mask_blur=0)
    assert painted[5, 5] == 255 and painted[30, 30] == 0


@pytest.mark.parametrize("mode, check", [
    (0, lambda inside, outside: inside.min() > 200),  # the white surroundings flow in
    (1, lambda inside, outside: inside.mean() < 1),  # original (black) kept
    (2, lambda inside, outside: inside.std() > 50),  # noise
    (3, lambda inside, outside: np.all(inside == 128)),  # mid grey
])
def test_masked_content_modes(mode, check):
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    image.paste((0, 0, 0), (16, 16, 48, 48))
    filled = np.asarray(fill_masked(image, square_mask(), mode, seed=1)).astype(float)
    assert check(filled[20:44, 20:44], filled[:8, :8])
    assert np.all(filled[:8, :8] == 255)


def test_colour_correction_takes_the_references_colours_and_keeps_the_pictures_lightness():
    """Histogram matching maps colours by rank, so it mends a drift (colours moved, order kept); it cannot tell a
    new colour from a drifted one."""
    from skimage import color

    def circle(colour, background=(255, 255, 255)):
        picture = Image.new("RGB", (64, 64), background)
        picture.paste(colour, (16, 16, 48, 48))
        return picture

    drifted = circle((230, 120, 40), background=(225, 235, 255))  # the colours a few img2img rounds moved
    corrected = match_colours(drifted, circle((220, 30, 30)))
    middle, corner = np.asarray(corrected)[32, 32].astype(int), np.asarray(corrected)[2, 2].astype(int)
    assert middle[0] > middle[1] + 80 and middle[0] > middle[2] + 80  # orange back to red
    assert corner.min() > 220 and np.ptp(corner) < 10  # bluish white back to grey-white
    lightness = lambda picture: color.rgb2lab(np.asarray(picture))[..., 0]  # noqa: E731
    assert np.abs(lightness(corrected) - lightness(drifted)).max() < 4  # out-of-gamut colours clipped: a little


def test_tasks_need_their_images():
    with pytest.raises(RequestError, match="img2img needs an init image"):
        GenerationRequest(task="img2img")
    with pytest.raises(RequestError, match="The mask is empty"):
        GenerationRequest(task="inpaint", init_image=gradient())
    with pytest.raises(RequestError, match="init image must be an image"):
        GenerationRequest(task="img2img", init_image="not an image")
    with pytest.raises(RequestError, match="Denoising strength"):
        GenerationRequest(task="img2img", init_image=gradient(), steps=4, denoising_strength=0.1)


def request_for(task, **values):
    base = {"prompt": "a red circle", "model": "tiny-sd", "width": 64, "height": 64, "steps": 6, "seed": 3,
            "task": task, "init_image": gradient(64, 64), "denoising_strength": 0.5}
    if task == "inpaint":
        base["mask"] = square_mask()
    return GenerationRequest(**{**base, **values})


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
def test_img2img_runs_strength_steps_and_is_deterministic(engine, model):
    steps = []
    first = engine.generate(request_for("img2img", model=model), on_progress=lambda e: steps.append(e.step))
    second = engine.generate(request_for("img2img", model=model))
    assert steps == [1, 2, 3]  # 6 steps x strength 0.5
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(second.images[0]))
    assert "Denoising strength: 0.5" in first.infotexts[0] and first.paths[0].parent.parent.name == "img2img-images"


def test_inpaint_keeps_unmasked_pixels_exactly(engine):
    request = request_for("inpaint", mask_blur=0, denoising_strength=1.0, batch_size=2)
    result = engine.generate(request)
    original = np.asarray(gradient(64, 64))
    for image in result.images:
        out = np.asarray(image)
        assert np.array_equal(out[:16], original[:16]) and np.array_equal(out[:, 50:], original[:, 50:])
        assert not np.array_equal(out[20:44, 20:44], original[20:44, 20:44])
    assert "Mask blur: 0, Masked content: original" in result.infotexts[0]


def test_inpaint_only_masked_works_on_the_region(engine):
    result = engine.generate(request_for("inpaint", inpaint_full_res=True, inpaint_full_res_padding=4,
                                         model="tiny-sdxl"))
    out, original = np.asarray(result.images[0]), np.asarray(gradient(64, 64))
    assert result.images[0].size == (64, 64)
    assert np.abs(out[:8].astype(int) - original[:8]).max() <= 2
    assert "Inpaint area: Only masked, Masked area padding: 4" in result.infotexts[0]


def test_outpaint_margins_are_validated():
    with pytest.raises(RequestError, match="multiples of 8"):
        request_for("inpaint", outpaint=(4, 0, 0, 0))
    with pytest.raises(RequestError, match="four margins"):
        request_for("inpaint", outpaint=5)
    with pytest.raises(RequestError, match="Outpainting is an inpaint task"):
        request_for("img2img", outpaint=(8, 0, 0, 0))
    with pytest.raises(RequestError, match="over 4096"):
        request_for("inpaint", width=4096, outpaint=(8, 0, 0, 0))


def test_outpaint_grows_the_canvas_keeping_the_original(engine):
    request = request_for("inpaint", mask=None, outpaint=(0, 32, 16, 0), mask_blur=2, denoising_strength=1.0)
    result = engine.generate(request)
    image = result.images[0]
    assert image.size == (96, 80) and request.output_size == (96, 80)
    original = np.asarray(gradient(64, 64))
    out = np.asarray(image)
    # away from the seam bands (8 px) and their blur, the original is untouched
    band = 8 + 6
    assert np.array_equal(out[16 + band:, :64 - band], original[band:, :64 - band])
    assert "Size: 96x80" in result.infotexts[0] and "Outpaint: L0 R32 U16 D0" in result.infotexts[0]

    again = engine.generate(request_for("inpaint", mask=None, init_image=image, width=96, height=80,
                                        outpaint=(8, 0, 0, 0)))
    assert again.images[0].size == (104, 80)
    assert "Outpaint: L0 R32 U16 D0; L8 R0 U0 D0" in again.infotexts[0]  # the history carries on


def test_an_all_black_mask_is_refused_with_the_same_message(engine):
    with pytest.raises(RequestError, match="The mask is empty"):
        engine.generate(request_for("inpaint", mask=Image.new("L", (64, 64), 0)))


def test_a_mask_of_another_size_is_resized(engine):
    result = engine.generate(request_for("inpaint", mask=square_mask(32, (8, 8, 24, 24)), mask_blur=0))
    assert result.images[0].size == (64, 64)


def test_a_dedicated_inpainting_checkpoint_inpaints_and_says_what_it_is_for(tmp_path):
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from training.tiny_random import build_tiny_sd

    build_tiny_sd(inpainting=True).save_pretrained(tmp_path / "Stable-diffusion" / "tiny-inpaint")
    engine = Engine(Registry(tmp_path), OutputWriter(tmp_path / "out"))
    assert engine.registry.resolve("tiny-inpaint").inpainting
    result = engine.generate(request_for("inpaint", model="tiny-inpaint", mask_blur=0, denoising_strength=1.0))
    out, original = np.asarray(result.images[0]), np.asarray(gradient(64, 64))
    assert np.array_equal(out[:16], original[:16]) and not np.array_equal(out[20:44, 20:44], original[20:44, 20:44])
    for task in ("txt2img", "img2img"):
        with pytest.raises(RequestError, match="tiny-inpaint is an inpainting model"):
            engine.generate(request_for(task, model="tiny-inpaint"))


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
def test_latent_upscale_resize_mode(engine, model):
    request = request_for("img2img", model=model, init_image=gradient(32, 32), resize_mode=3, width=64, height=96)
    first, second = engine.generate(request), engine.generate(request)
    assert first.images[0].size == (64, 96)
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(second.images[0]))
    assert not np.array_equal(np.asarray(first.images[0]),
                              np.asarray(engine.generate(request_for("img2img", model=model, init_image=gradient(32, 32),
                                                                     width=64, height=96)).images[0]))
