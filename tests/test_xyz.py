"""X/Y/Z plot: A1111's axis syntax, axis values applied to requests, grids and labels, one load per model."""

import numpy as np
import pytest

from pipelines.controlnet import ControlUnit
from pipelines.engine import Engine
from pipelines.errors import RequestError
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest
from pipelines.xyz import PlotResult, parse_values, plan, run_plot


def request(**values):
    return GenerationRequest(**{"prompt": "a red circle", "model": "tiny-sd", "width": 64, "height": 64, "steps": 2,
                                "seed": 5, **values})


@pytest.mark.parametrize("axis, text, values", [
    ("Steps", "1-5", [1, 2, 3, 4, 5]),
    ("Steps", "1-10 (+2)", [1, 3, 5, 7, 9]),
    ("Steps", "1-10 [5]", [1, 3, 5, 7, 10]),
    ("Steps", "10-1 (-3)", [10, 7, 4, 1]),
    ("Seed", "-1, 3, 5-6", [-1, 3, 5, 6]),
    ("CFG Scale", "0.5-1.5 (+0.25), 7", [0.5, 0.75, 1.0, 1.25, 1.5, 7.0]),
    ("Denoising", "0-1 [3]", [0.0, 0.5, 1.0]),
    ("Sampler", 'Euler a, "DPM++ 2M, Karras", DDIM', ["Euler a", "DPM++ 2M, Karras", "DDIM"]),
    ("Nothing", "", [None]),
])
def test_axis_syntax(axis, text, values):
    assert parse_values(axis, text) == values


@pytest.mark.parametrize("axis, text, message", [
    ("Steps", "a, 2", "not a number"), ("Steps", "1-5 (-1)", "never reaches"), ("Steps", " , ", "no values"),
    ("Colour", "1", "Unknown axis"),
])
def test_bad_axis_values_say_why(axis, text, message):
    with pytest.raises(RequestError, match=message):
        parse_values(axis, text)


def test_values_change_the_requests():
    unit = ControlUnit(model="tiny-sd-control", weight=1.0)
    base = request(prompt="a red circle <lora:outline:0.5>", negative_prompt="red blur", controlnets=[unit])
    cells = plan(base, [("Prompt S/R", "red, blue"), ("LoRA weight", "0, 1.5"), ("ControlNet weight", "0.2")]).cells
    assert cells[1, 1, 0].prompt == "a blue circle <lora:outline:1.5>" and cells[1, 1, 0].negative_prompt == "blue blur"
    assert cells[0, 0, 0].prompt == "a red circle <lora:outline:0>" and cells[0, 0, 0].controlnets[0].weight == 0.2
    varied = plan(request(styles=["framed"]), [("Var. strength", "0-1 [3]"), ("Var. seed", "4, 5"),
                                               ("Styles", "red")]).cells
    assert (varied[2, 1, 0].subseed_strength, varied[2, 1, 0].subseed, varied[2, 1, 0].styles) == \
        (1.0, 5, ("framed", "red"))
    refined = plan(request(), [("Refiner checkpoint", "None, tiny-sdxl"), ("Refiner switch at", "0.5, 1")]).cells
    assert (refined[0, 1, 0].refiner_checkpoint, refined[1, 0, 0].refiner_checkpoint) == ("", "tiny-sdxl")
    assert refined[1, 1, 0].refiner_switch_at == 1.0
    more = plan(request(enable_hr=True, sampler="DPM++ 2M"),
                [("Schedule type", "Karras, Automatic"), ("Clip skip", "1-2"), ("Hires upscaler", "Nearest")]).cells
    assert (more[0, 1, 0].scheduler, more[0, 1, 0].clip_skip, more[0, 1, 0].hr_upscaler) == ("Karras", 2, "Nearest")
    stepped = plan(request(enable_hr=True), [("Hires steps", "1, 3")]).cells
    assert [stepped[i, 0, 0].hr_second_pass_steps for i in range(2)] == [1, 3]
    sized = plan(request(), [("Size", "64x96, 128"), ("Seed", "-1")]).cells
    assert (sized[0, 0, 0].width, sized[0, 0, 0].height, sized[1, 0, 0].height) == (64, 96, 128)
    assert sized[0, 0, 0].seed == sized[1, 0, 0].seed >= 0  # -1 drawn once
    for axes, message in (([("Prompt S/R", "green, blue")], "not in the prompt"), ([("LoRA weight", "1")], "lora"),
                          ([("ControlNet weight", "1")], "ControlNet unit"), ([("Steps", "1"), ("Steps", "2")], "once"),
                          ([("Sampler", "Nope")], "sampler")):
        with pytest.raises(RequestError, match=message):
            plan(request(), axes)


def test_grid_per_z_value_with_labels_and_each_model_loaded_once(models_dir, tmp_path, monkeypatch):
    registry = Registry(models_dir, device="cpu", memory_budget=1)  # holds one model at a time
    loads = []
    original = Registry._load
    monkeypatch.setattr(Registry, "_load", lambda self, info: loads.append(info.name) or original(self, info))
    engine = Engine(registry, OutputWriter(tmp_path / "out"), preview_every=0)
    # the model axis is X, the innermost of the grid: it still runs outermost
    plot = plan(request(), [("Checkpoint name", "tiny-sd, tiny-sdxl"), ("Steps", "1, 2"), ("CFG Scale", "1, 7")])
    assert [key[0] for key in plot.order] == [0, 0, 0, 0, 1, 1, 1, 1]
    events = list(run_plot(engine.stream, plot, save=False))
    result = events[-1]
    assert loads == ["tiny-sd", "tiny-sdxl"]
    assert len(events) - 1 == 2 * (1 + 2) * 2 and events[-2].fraction == 1.0
    assert "Steps: 2" in result.infotexts[1, 1, 1] and "Model: tiny-sdxl" in result.infotexts[1, 1, 1]
    assert plot.labels(0) == ["tiny-sd", "tiny-sdxl"] and plot.labels(1) == ["Steps: 1", "Steps: 2"]
    grids = result.grids()
    assert len(grids) == 2
    for z, grid in enumerate(grids):
        assert grid.height > 2 * 64 and grid.width > 2 * 64  # labels on top and at the left
        left, top = grid.width - 2 * 64, grid.height - 2 * 64
        pixels = np.asarray(grid.convert("L"))
        assert (pixels[:top] < 128).any() and (pixels[top:, :left] < 128).any()  # column and row labels drawn
        cell = np.asarray(result.images[1, 0, z].convert("L"))
        assert np.array_equal(pixels[top:top + 64, left + 64:], cell)  # X=1, Y=0 in its place
    first, second = result.grid_infotexts()  # each grid's: its first cell's, with the axes as A1111 adds them
    axes = (', Script: X/Y/Z plot, X Type: Checkpoint name, X Values: "tiny-sd, tiny-sdxl", Y Type: Steps, '
            'Y Values: "1, 2", Z Type: CFG Scale, Z Values: "1, 7"')
    assert first == result.infotexts[0, 0, 0] + axes and second == result.infotexts[0, 0, 1] + axes
    assert "Model: tiny-sd," in second and "Steps: 1," in second and "CFG scale: 7," in second
    spaced = np.asarray(result.grids(margin=10)[0].convert("L"))  # A1111's "Grid margins (px)"
    assert spaced.shape == (grids[0].height + 10, grids[0].width + 10)  # one gap across, one down
    assert (spaced[-64:, -74:-64] == 255).all() and np.array_equal(spaced[-64:, -64:],
                                                                     np.asarray(result.images[1, 1, 0].convert("L")))


def test_a_grid_keeps_the_seeds_drawn_for_its_axis():
    """A1111's "Fixed X Values": the seeds the plot ran, -1 drawn; a Z grid whose cells never ran has no parameters."""
    plot = plan(request(), [("Seed", "-1, 3"), ("Nothing", ""), ("Steps", "2, 4")])
    drawn = plot.cells[0, 0, 0].seed
    result = PlotResult(plot, {}, {(1, 0, 0): "a red circle\nSteps: 2, Seed: 3, Size: 64x64"})
    assert result.grid_infotexts() == [
        f'a red circle\nSteps: 2, Seed: 3, Size: 64x64, Script: X/Y/Z plot, X Type: Seed, X Values: "-1, 3", '
        f'Fixed X Values: "{drawn}, 3", Z Type: Steps, Z Values: "2, 4"', ""]
