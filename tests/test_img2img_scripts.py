"""A1111's Loopback and SD upscale: their arithmetic, their checks, and what they paint on the embedded model
(each loop and tile compared with the plain img2img pass it must equal); img2img's colour correction with them."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.engine import Engine
from pipelines.errors import RequestError
from pipelines.images import match_colours
from pipelines.img2img_scripts import Tiles, loopback_history, loopback_strengths
from pipelines.infotext import parse_infotext
from pipelines.job_plan import grids, plan
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest

ROOT = Path(__file__).resolve().parent.parent
MODEL = "easel-shapes"
PROMPT = "a large red circle in the center on a white background"


@pytest.mark.parametrize("curve, expected", [
    ("Linear", [0.8, 0.7, 0.6, 0.5]),
    ("Aggressive", [0.8, 0.65, 0.5402, 0.5]),  # most of the change early
    ("Lazy", [0.8, 0.7598, 0.65, 0.5]),  # most of it late
])
def test_the_strength_goes_from_the_first_to_the_final_along_the_curve(curve, expected):
    assert loopback_strengths(0.8, 0.5, 4, curve) == expected
    assert loopback_strengths(0.8, 0.5, 1, curve) == [0.8]  # one loop: the tab's strength


def test_tiles_cover_the_picture_overlapping_at_least_by_the_overlap_and_combine_back_exactly():
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8))
    tiles = Tiles.cover(picture.size, (64, 48), 16)
    xs, ys = sorted({x for x, _ in tiles.corners}), sorted({y for _, y in tiles.corners})
    assert xs[0] == ys[0] == 0 and xs[-1] + 64 == 200 and ys[-1] + 48 == 150  # the last flush with the edge
    assert all(b - a <= 64 - 16 for a, b in zip(xs, xs[1:])) and all(b - a <= 48 - 16 for a, b in zip(ys, ys[1:]))
    assert len(tiles.corners) == len(xs) * len(ys) == 4 * 5  # as few as that overlap allows
    assert np.array_equal(np.asarray(tiles.combine(tiles.crops(picture))), np.asarray(picture))
    single = Tiles.cover((64, 64), (64, 64), 16)
    assert single.corners == ((0, 0),)


def test_overlapping_tiles_blend_without_a_seam():
    tiles = Tiles.cover((112, 64), (64, 64), 16)  # two tiles overlapping by 16 pixels
    combined = np.asarray(tiles.combine([Image.new("RGB", (64, 64), (0, 0, 0)), Image.new("RGB", (64, 64),
                                                                                           (240, 240, 240))]))
    row = combined[32, :, 0].astype(int)
    assert (row[:48] == 0).all() and (row[64:] == 240).all()  # each tile's own part is its own
    assert (np.diff(row[47:65]) > 0).all() and np.diff(row[47:65]).max() <= 240 / 16 + 1  # a ramp, no step


@pytest.mark.parametrize("values, field", [
    ({"task": "txt2img", "loopback": True}, "loopback"),
    ({"loopback": True, "batch_size": 2}, "batch_size"),
    ({"loopback": True, "task": "inpaint", "outpaint": (0, 64, 0, 0)}, "outpaint"),
    ({"loopback": True, "loopback_final_strength": 0.01}, "loopback_final_strength"),  # no step at 20 steps
    ({"loopback": True, "loopback_curve": "Wavy"}, "loopback_curve"),
    ({"loopback": True, "loopback_loops": 33}, "loopback_loops"),
    ({"sd_upscale": True, "task": "inpaint", "mask": Image.new("L", (64, 64), 255)}, "sd_upscale"),
    ({"sd_upscale": True, "sd_upscale_overlap": 64}, "sd_upscale_overlap"),  # no smaller than a tile
    ({"sd_upscale": True, "width": 256, "height": 256}, "sd_upscale_scale"),  # 128x128 holds no 256 tile
    ({"sd_upscale": True, "sd_upscale_scale": 5}, "sd_upscale_scale"),
    ({"sd_upscale": True, "controlnets": [{"enabled": True, "model": "x", "image": Image.new("RGB", (64, 64))}]},
     "sd_upscale"),
])
def test_settings_a_script_cannot_use_are_refused_naming_the_field(values, field):
    with pytest.raises(RequestError) as refused:
        GenerationRequest(**{"task": "img2img", "init_image": Image.new("RGB", (64, 64)), "width": 64,
                             "height": 64, **values})
    assert refused.value.field == field


def test_one_script_at_a_time():
    with pytest.raises(RequestError, match="Loopback and SD upscale cannot run together"):
        plan({"loopback": True, "sd_upscale": True})
    with pytest.raises(RequestError, match="a prompt list and Loopback cannot run together"):
        plan({"loopback": True, "prompt_lines": "a\nb"})


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(Registry(ROOT / "models"), OutputWriter(tmp_path_factory.mktemp("out")))


def request(**values) -> GenerationRequest:
    return GenerationRequest(**{"prompt": PROMPT, "model": MODEL, "width": 64, "height": 64, "steps": 20,
                                "sampler": "Euler a", "seed": 5, "task": "img2img", **values})


@pytest.fixture(scope="module")
def circle(engine):
    return engine.generate(request(task="txt2img", seed=1)).images[0]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_each_loop_paints_over_the_last_at_its_strength_and_each_chain_starts_again(engine, circle):
    blue = "a large blue square in the center on a black background"
    made = engine.generate(request(prompt=blue, init_image=circle, denoising_strength=0.6, loopback=True,
                                   loopback_loops=2, loopback_final_strength=0.4, batch_count=2))
    assert made.seeds == [5, 6, 7, 8] and len(made.images) == 4 and all(made.paths)  # every loop kept
    params = [parse_infotext(text)[2] for text in made.infotexts]
    assert [p["Denoising strength"] for p in params] == ["0.6", "0.4"] * 2
    assert params[0]["Final denoising strength"] == "0.4" and params[0]["Denoising curve"] == "Linear"
    first = engine.generate(request(prompt=blue, init_image=circle, denoising_strength=0.6)).images[0]
    second = engine.generate(request(prompt=blue, init_image=first, denoising_strength=0.4, seed=6)).images[0]
    chain = engine.generate(request(prompt=blue, init_image=circle, denoising_strength=0.6, seed=7)).images[0]
    for made_picture, expected in zip(made.images[:3], (first, second, chain)):
        assert np.array_equal(pixels(made_picture), pixels(expected))
    assert np.abs(pixels(made.images[1]) - pixels(made.images[0])).mean() > 1  # the second loop changed it
    [(grid, text, *_)] = grids([plan({"loopback": True})], [made])  # A1111's history: each chain's last picture
    assert grid.width >= 2 * 64 and grid.height > 64 and text == made.infotexts[0]
    [(single, *_)] = grids([plan({"loopback": True})], [engine.generate(request(
        prompt=blue, init_image=circle, loopback=True, loopback_loops=3, denoising_strength=0.6))])
    assert single.width >= 3 * 64  # one chain: every loop
    assert loopback_history([0, 1, 2], 3, [0.6, 0.5, 0.4]) == [(0, "Loop 1: 0.6"), (1, "Loop 2: 0.5"),
                                                               (2, "Loop 3: 0.4")]
    assert loopback_history([0, 1, 2, 3], 2, [0.6, 0.4]) == [(1, "Chain 1"), (3, "Chain 2")]
    assert loopback_history([0, 2, 3], 2, [0.6, 0.4]) == [(0, "Chain 1"), (2, "Chain 2")]  # chain 1 skipped early


def test_colour_correction_matches_every_loop_to_the_first_loops_picture(engine, circle):
    """A1111's img2img colour correction, in Loopback anchored to the original (not the loop before)."""
    blue = "a large blue square in the center on a black background"
    made = engine.generate(request(prompt=blue, init_image=circle, denoising_strength=0.6, loopback=True,
                                   loopback_loops=2, loopback_final_strength=0.4, color_correction=True))
    assert all("Color correction: True" in text for text in made.infotexts)
    assert GenerationRequest.from_infotext(made.infotexts[0]).color_correction  # read back (PNG Info, Send to)
    raw = engine.generate(request(prompt=blue, init_image=circle, denoising_strength=0.6)).images[0]
    assert np.array_equal(pixels(made.images[0]), pixels(match_colours(raw, circle)))
    raw = engine.generate(request(prompt=blue, init_image=made.images[0], denoising_strength=0.4, seed=6)).images[0]
    assert np.array_equal(pixels(made.images[1]), pixels(match_colours(raw, circle)))
    assert "Color correction" not in engine.generate(request(task="txt2img", color_correction=True)).infotexts[0]


def test_loopback_inpaints_the_masked_part_only_keeping_the_masked_content_after_the_first_loop(engine, circle):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    made = engine.generate(request(task="inpaint", init_image=circle, mask=mask, mask_blur=0, inpainting_fill=0,
                                   loopback=True, loopback_loops=3, denoising_strength=0.9))
    contents = [parse_infotext(text)[2]["Masked content"] for text in made.infotexts]
    assert contents == ["fill", "original", "original"]
    for picture in made.images:
        assert np.array_equal(pixels(picture)[:, 32:], pixels(circle)[:, 32:])  # outside the mask: untouched


def test_sd_upscale_of_one_tile_is_the_plain_img2img_pass(engine, circle):
    made = engine.generate(request(init_image=circle, sd_upscale=True, sd_upscale_scale=1.0,
                                   denoising_strength=0.5))
    plain = engine.generate(request(init_image=circle, denoising_strength=0.5)).images[0]
    assert np.array_equal(pixels(made.images[0]), pixels(plain))


def test_sd_upscale_repaints_each_tile_with_its_own_seed_and_blends_them(engine, circle):
    made = engine.generate(request(init_image=circle, sd_upscale=True, sd_upscale_scale=1.5, sd_upscale_overlap=16,
                                   denoising_strength=0.3, batch_count=2, batch_size=3))  # passes of 3 tiles and 1
    assert [image.size for image in made.images] == [(96, 96)] * 2 and made.seeds == [5, 6]
    params = parse_infotext(made.infotexts[1])[2]
    assert params["SD upscale overlap"] == "16" and params["SD upscale upscaler"] == "Lanczos"
    assert params["Seed"] == "6" and params["Size"] == "64x64"  # A1111's: the tile's size
    upscaled = circle.resize((96, 96), Image.LANCZOS)
    tiles = Tiles.cover((96, 96), (64, 64), 16)
    assert len(tiles.corners) == 4
    for picture, seed in zip(made.images, made.seeds):
        painted = [engine.generate(request(init_image=crop, denoising_strength=0.3, seed=seed + k)).images[0]
                   for k, crop in enumerate(tiles.crops(upscaled))]
        difference = np.abs(pixels(picture) - pixels(tiles.combine(painted)))
        assert difference.max() <= 2 and difference.mean() < 0.01  # batched against alone: rounding (1 thread)
    assert np.abs(pixels(made.images[0]) - pixels(upscaled)).mean() < 20  # a light repaint keeps the picture
