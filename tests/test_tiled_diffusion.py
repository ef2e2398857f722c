"""Tiled Diffusion (the multidiffusion-upscaler extension): its grid and weights, the blend of a UNet's predictions
made tile by tile (exact for a UNet that works pixel by pixel, with CFG, regional parts and ControlNet residuals),
the request's checks and infotext (tiny models; the API's are in test_api.py, the embedded model's meaning in
test_embedded_model.py)."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from pipelines.composable import ComposedUNet, Guidance
from pipelines.errors import RequestError
from pipelines.infotext import parse_infotext
from pipelines.regions import Area
from pipelines.request import GenerationRequest
from pipelines.tiled_diffusion import Tile, TiledDiffusion, from_infotext, window
from unet_calls import UNetCalls


def test_the_grid_is_the_extensions():
    """1024 x 1280 pixels in tiles of 96 with 48 of overlap: 2 rows of 3, spread evenly, in two batches of 3."""
    settings = TiledDiffusion()
    assert settings.tiles(128, 160) == [Tile(top, left, 96, 96) for top in (0, 32) for left in (0, 32, 64)]
    assert [len(batch) for batch in settings.batches(128, 160)] == [3, 3]
    assert [len(batch) for batch in TiledDiffusion(tile_width=16, tile_height=16, overlap=0).batches(16, 160)] == [
        4, 4, 2]  # ten tiles, at most 4 to a batch: three batches, of ceil(10 / 3) as the extension makes them
    assert settings.tiles(64, 96) == [Tile(0, 0, 64, 96)]  # it fits: one tile, the whole grid
    # an overlap past the tile is held 4 under it; a side shorter than a tile makes the tile that short
    assert TiledDiffusion(tile_width=16, tile_height=16, overlap=100).tiles(8, 40) == [
        Tile(0, left, 8, 16) for left in (0, 4, 8, 12, 16, 20, 24)]


def test_mixture_of_diffusers_weighs_a_tile_by_a_gaussian_around_its_middle():
    cpu = torch.device("cpu")
    weight = TiledDiffusion(method="Mixture of Diffusers").weight(Tile(0, 0, 8, 16), cpu)
    assert weight.shape == (8, 16) and TiledDiffusion().weight(Tile(0, 0, 8, 16), cpu) == 1.0
    expected = torch.exp(torch.tensor(-(4.0**2 + 7.5**2) / 16**2 / 0.02)) / torch.exp(torch.tensor(-0.5**2 / 16**2
                                                                                                    / 0.02))
    torch.testing.assert_close(weight[0, 0] / weight[4].max(), expected)  # the extension's: rows centred at 4


def test_a_window_cuts_each_unet_level_where_the_tile_lies():
    grid = torch.arange(40 * 48.0).view(1, 1, 40, 48)
    tile = Tile(8, 16, 16, 24)
    assert torch.equal(window(grid, tile, 40, 48), grid[..., 8:24, 16:40])
    assert torch.equal(window(grid[..., ::8, ::8], tile, 40, 48), grid[..., 8:24:8, 16:40:8])
    odd = torch.zeros(1, 1, 7, 7)  # 50 x 50 latents halved three times, each rounding up
    assert window(odd, Tile(34, 34, 16, 16), 50, 50).shape[-2:] == (2, 2)


def pointwise(sample, timestep, encoder_hidden_states, added_cond_kwargs=None, return_dict=False,
              down_block_additional_residuals=(), mid_block_additional_residual=None):
    """A UNet whose prediction at each latent pixel reads that pixel alone (and its text, and the residuals there)."""
    text = encoder_hidden_states.mean((1, 2)).view(-1, 1, 1, 1)
    out = sample * 2 + text * sample.sin() + timestep / 1000
    for residual in (*down_block_additional_residuals, mid_block_additional_residual):
        out = out + F.interpolate(residual, size=sample.shape[-2:], mode="nearest")
    return (out,)


@pytest.mark.parametrize("method", ["MultiDiffusion", "Mixture of Diffusers"])
def test_tiles_of_a_pointwise_unet_blend_into_its_whole_prediction(method):
    """Two pictures with CFG, three regional parts and residuals at three UNet levels: tile by tile (20 tiles, 3 to a
    call) the blend is the whole call's prediction, each tile's rows and parts and residuals where they belong."""
    generator = torch.Generator().manual_seed(0)

    def noise(*shape):
        return torch.randn(*shape, generator=generator)

    sample, texts = noise(4, 4, 40, 48), noise(4, 7, 8)
    kwargs = {"down_block_additional_residuals": [noise(4, 4, 40, 48), noise(4, 4, 20, 24)],
              "mid_block_additional_residual": noise(4, 4, 5, 6)}
    parts = ((Area((((0, 1, 0, .5), 1.0),)), noise(1, 7, 8), None), (Area((((0, 1, .5, 1), 0.7),)), noise(1, 7, 8),
                                                                       None), (0.3, noise(1, 7, 8), None))
    calls = []

    def unet(*args, **values):
        calls.append(args[0].shape[0])
        return pointwise(*args, **values)

    def predict(tiles):
        composed = ComposedUNet(lambda: (unet, parts), 2, Guidance(scale=7.0, tiles=tiles))
        return composed(sample, torch.tensor(500), texts, added_cond_kwargs=None, return_dict=False, **kwargs)[0]

    whole = predict(None)
    tiles = TiledDiffusion(method, tile_width=16, tile_height=16, overlap=8, batch_size=3)
    assert len(tiles.tiles(40, 48)) == 20
    calls.clear()
    torch.testing.assert_close(predict(tiles), whole)
    assert calls == [3 * 8] * 6 + [2 * 8]  # 3 tiles x (2 unprompted + 2 pictures x 3 parts) rows, then 2 tiles


def make(**values) -> GenerationRequest:
    """tiny-sd's latents are half its pictures' size: 64 x 64 pixels are 32 x 32 latents, three tiles of 32 x 16."""
    return GenerationRequest(**{"prompt": "a red circle", "model": "tiny-sd", "width": 64, "height": 64, "steps": 3,
                                "seed": 1, "tiled_diffusion": True, "td_tile_width": 32, "td_tile_height": 16,
                                "td_overlap": 8, **values})


def test_each_unet_call_is_a_batch_of_tiles(engine):
    with UNetCalls(engine, "tiny-sd") as calls:
        made = engine.generate(make())
    assert [tuple(call["sample"].shape) for call in calls["tiny-sd"]] == [(6, 4, 16, 32)] * 3  # 3 x 2 rows (CFG)
    assert ('Tiled Diffusion: {"Method": "MultiDiffusion", "Tile tile width": 32, "Tile tile height": 16, '
            '"Tile Overlap": 8, "Tile batch size": 4}, ') in made.infotexts[0]  # A1111's json.dumps of the dict


def test_hires_fix_tiles_the_pass_that_does_not_fit_a_tile(engine):
    """The first pass fits a tile and is made whole; hires fix's, twice as large, is made in 9 tiles, 3 to a call.
    Latents that fit a tile are not tiled, nor is Tiled Diffusion in their infotext."""
    with UNetCalls(engine, "tiny-sd") as calls:
        made = engine.generate(make(td_tile_height=32, enable_hr=True, hr_scale=2, denoising_strength=0.7))
    sizes = [tuple(call["sample"].shape) for call in calls["tiny-sd"]]
    assert sizes[0] == (2, 4, 32, 32) and sizes[-1] == (6, 4, 32, 32)
    assert "Tiled Diffusion: " in made.infotexts[0]
    assert "Tiled Diffusion" not in engine.generate(make(td_tile_height=32)).infotexts[0]


def test_the_infotext_reads_back_in_every_version_of_the_extension(engine):
    request = make(td_method="Mixture of Diffusers", td_tile_width=32, td_overlap=12, td_batch_size=2)
    again = GenerationRequest.from_infotext(engine.generate(request).infotexts[0])
    assert again.tiles == request.tiles == TiledDiffusion("Mixture of Diffusers", 32, 16, 12, 2)
    older = {"Tiled Diffusion": "{'Method': 'MultiDiffusion', 'Latent tile width': 64, 'Latent tile height': 80, "
                                "'Overlap': 16, 'Tile batch size': 2}"}  # Easel's first versions wrote Python's
    first = {"Tiled Diffusion method": "Mixture of Diffusers", "Tiled Diffusion tile width": "48",
             "Tiled Diffusion overlap": "8"}
    assert GenerationRequest(**from_infotext(older)).tiles == TiledDiffusion("MultiDiffusion", 64, 80, 16, 2)
    assert GenerationRequest(**from_infotext(first)).tiles == TiledDiffusion("Mixture of Diffusers", 48, 96, 8, 4)
    assert from_infotext({"Tiled Diffusion": "__import__('os')"}) == {} == from_infotext({"Steps": "20"})
    # an upscale as A1111 writes it (the flat keys and the dict, whose JSON says true)
    _, _, params = parse_infotext(
        "a\nSteps: 18, Denoising strength: 0.35, Tiled Diffusion upscaler: 4x-UltraSharp, Tiled Diffusion scale "
        'factor: 2, Tiled Diffusion: {"Method": "MultiDiffusion", "Tile tile width": 112, "Tile tile height": 144, '
        '"Tile Overlap": 4, "Tile batch size": 8, "Upscaler": "4x-UltraSharp", "Upscale factor": 2, "Keep input '
        'size": true}, ControlNet 0: "Module: tile_resample, Model: control_v11f1e_sd15_tile, Weight: 0.6", Seed: 1')
    assert params["ControlNet 0"].startswith("Module: tile_resample") and params["Seed"] == "1"
    upscaled = GenerationRequest(task="img2img", init_image=Image.new("RGB", (64, 64)), **from_infotext(params))
    assert upscaled.tiles == TiledDiffusion("MultiDiffusion", 112, 144, 4, 8, "4x-UltraSharp", 2.0, True)


@pytest.mark.parametrize("values, field", [
    ({"td_method": "SpotDiffusion"}, "td_method"),
    ({"td_tile_width": 8}, "td_tile_width"),
    ({"td_overlap": 300}, "td_overlap"),
    ({"td_batch_size": 0}, "td_batch_size"),
    ({"tiling": True}, "tiling"),  # a tile's edges are not the picture's
    ({"step_cache": 3}, "step_cache"),  # its kept features would be another tile's
])
def test_what_tiled_diffusion_cannot_take_is_refused_by_name(values, field):
    with pytest.raises(RequestError) as refused:
        make(**values)
    assert refused.value.field == field


def test_img2img_upscales_the_picture_first_from_its_own_size_or_the_width_and_height(engine):
    """The extension's img2img upscaler: the picture upscaled by the factor (to whole latent pixels) and the pass
    made at that size, in tiles; from the picture's own size (*Keep input image size*), or from the width and
    height. txt2img has no picture for it; an upscale past 4096, an unknown upscaler, Loopback and SD upscale are
    refused by name."""
    picture = Image.new("RGB", (64, 48), "red")
    values = {"task": "img2img", "init_image": picture, "td_upscaler": "Lanczos", "td_scale_factor": 1.5,
              "denoising_strength": 0.5}
    with UNetCalls(engine, "tiny-sd") as calls:
        kept = engine.generate(make(**values))
    assert kept.images[0].size == (96, 72) and {tuple(call["sample"].shape[-2:]) for call in calls["tiny-sd"]} == {
        (16, 32)}  # 36 x 48 latents in tiles of 16 x 32
    params = parse_infotext(kept.infotexts[0])[2]
    assert (params["Size"], params["Tiled Diffusion upscaler"], params["Tiled Diffusion scale factor"]) == (
        "96x72", "Lanczos", "1.5")
    assert '"Upscaler": "Lanczos", "Upscale factor": 1.5, "Keep input size": true}' in params["Tiled Diffusion"]
    again = GenerationRequest.from_infotext(kept.infotexts[0], task="img2img", init_image=picture)
    assert again.tiles == make(**values).tiles
    sized = engine.generate(make(**values, td_keep_input_size=False, width=64, height=128))
    assert sized.images[0].size == (96, 192)
    plain = engine.generate(make(td_upscaler="Lanczos", td_scale_factor=1.5))
    assert plain.images[0].size == (64, 64) and "upscaler" not in plain.infotexts[0]
    for changes, field in (({"td_scale_factor": 8.0, "init_image": Image.new("RGB", (1024, 64))}, "td_scale_factor"),
                           ({"td_upscaler": "4x-Nowhere"}, "td_upscaler"),
                           ({"loopback": True}, "td_upscaler"), ({"sd_upscale": True}, "td_upscaler")):
        with pytest.raises(RequestError) as refused:
            engine.generate(make(**{**values, **changes}))
        assert refused.value.field == field, changes


def test_controlnet_ip_adapter_pag_and_rescale_ride_on_the_tiles(engine):
    """A canny ControlNet (its residuals cut to each tile at every level) and an IP-Adapter unit, with PAG and
    Rescale CFG on the blended prediction: every UNet call is a batch of tiles."""
    canvas = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(canvas).ellipse((16, 16, 48, 48), outline="black", width=3)
    units = [{"model": "tiny-sd-control", "module": "canny", "image": canvas},
             {"model": "ip-adapter_tiny-sd", "module": "ip-adapter_clip_h", "image": canvas}]
    with UNetCalls(engine, "tiny-sd") as calls:
        made = engine.generate(make(controlnets=units, pag_scale=2.0, rescale_cfg=0.7, sampler="Euler"))
    assert [tuple(call["sample"].shape) for call in calls["tiny-sd"]] == [(9, 4, 16, 32)] * 3  # PAG's rows too
    assert [len(call["down_block_additional_residuals"]) for call in calls["tiny-sd"]] == [4] * 3
    assert all(torch.isfinite(call["sample"]).all() for call in calls["tiny-sd"])
    assert "Tiled Diffusion: " in made.infotexts[0] and "PAG scale: 2" in made.infotexts[0]
