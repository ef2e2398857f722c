"""X/Y/Z plot: A1111's axis syntax, axis values applied to requests, grids and labels, one load per model."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from pipelines.controlnet import ControlUnit
from pipelines.engine import Engine
from pipelines.errors import RequestError
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest
from pipelines.engine import GenerationResult
from pipelines.xyz import PlotOptions, PlotResult, parse_values, plan, run_plot


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
    ("Prompt order", "red, circle", [("red", "circle"), ("circle", "red")]),
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
    lyco = plan(request(prompt="a red circle <lyco:weave:0.5:0.2>"), [("LoRA weight", "0.8")]).cells
    assert lyco[0, 0, 0].prompt == "a red circle <lyco:weave:0.8>"  # A1111's old tag for LyCORIS files, kept
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
    ordered = plan(request(prompt="a red circle, blurry"), [("Prompt order", "circle, red, blurry")]).cells
    assert [cell.prompt for cell in ordered.values()] == [
        "a circle red, blurry", "a circle blurry, red", "a red circle, blurry", "a red blurry, circle",
        "a blurry circle, red", "a blurry red, circle"]
    noisy = plan(request(task="img2img", init_image=Image.new("RGB", (64, 64))),
                 [("Initial noise multiplier", "0.5, 1"), ("Extra noise", "0, 0.2")]).cells
    assert (noisy[0, 0, 0].initial_noise_multiplier, noisy[0, 1, 0].img2img_extra_noise) == (0.5, 0.2)
    resampled = plan(request(enable_hr=True), [("Hires sampler", "DDIM")]).cells
    assert resampled[0, 0, 0].hr_sampler_name == "DDIM"
    sized = plan(request(), [("Size", "64x96, 128"), ("Seed", "-1")]).cells
    assert (sized[0, 0, 0].width, sized[0, 0, 0].height, sized[1, 0, 0].height) == (64, 96, 128)
    assert sized[0, 0, 0].seed == sized[1, 0, 0].seed >= 0  # -1 drawn once
    for axes, message in (([("Prompt S/R", "green, blue")], "not in the prompt"), ([("LoRA weight", "1")], "lora"),
                          ([("ControlNet weight", "1")], "ControlNet unit"), ([("Steps", "1"), ("Steps", "2")], "once"),
                          ([("Sampler", "Nope")], "sampler"), ([("Prompt order", "red, square")], "square")):
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
    main, *grids = result.grids()
    assert len(grids) == 0  # each Z value's grid only with "Include Sub Grids"
    _, *grids = PlotResult(replace(plot, options=PlotOptions(sub_grids=True)), result.results).grids()
    assert len(grids) == 2
    for z, (grid, *_) in enumerate(grids):
        assert grid.height > 2 * 64 and grid.width > 2 * 64  # labels on top and at the left
        left, top = grid.width - 2 * 64, grid.height - 2 * 64
        pixels = np.asarray(grid.convert("L"))
        assert (pixels[:top] < 128).any() and (pixels[top:, :left] < 128).any()  # column and row labels drawn
        cell = np.asarray(result.images[1, 0, z].convert("L"))
        assert np.array_equal(pixels[top:top + 64, left + 64:], cell)  # X=1, Y=0 in its place
    assert main.image.size == (grids[0].image.width + grids[1].image.width, grids[0].image.height)  # side by side
    assert np.array_equal(np.asarray(main.image)[:, grids[0].image.width:], np.asarray(grids[1].image))
    # each grid's parameters: its first cell's, with the axes as A1111 adds them (a Z value's grid without Z's)
    axes = (', Script: X/Y/Z plot, X Type: Checkpoint name, X Values: "tiny-sd, tiny-sdxl", Y Type: Steps, '
            'Y Values: "1, 2"')
    assert main.infotext == result.infotexts[0, 0, 0] + axes + ', Z Type: CFG Scale, Z Values: "1, 7"'
    assert [grid.infotext for grid in grids] == [result.infotexts[0, 0, 0] + axes, result.infotexts[0, 0, 1] + axes]
    assert "Model: tiny-sd," in grids[1].infotext and "CFG scale: 7," in grids[1].infotext
    assert [cell.infotexts[0] for cell in result.cells()[:3]] == [result.infotexts[key] for key in (
        (0, 0, 0), (1, 0, 0), (0, 1, 0))]  # A1111's order: X fastest


def _results(plot, infotexts: dict) -> dict:
    """Cells that ran (a picture each), without running them."""
    return {key: GenerationResult(plot.cells[key], [Image.new("RGB", (64, 64), (40 * sum(key), 0, 0))], [text])
            for key, text in infotexts.items()}


def test_margins_and_no_legend():
    """A1111's "Grid margins (px)" put white between the cells; without "Draw legend" the grid is the pictures."""
    plot = plan(request(), [("Steps", "1, 2"), ("CFG Scale", "1, 7")], PlotOptions(margin=10))
    cells = _results(plot, {(x, y, 0): "x" for x in range(2) for y in range(2)})
    spaced = np.asarray(PlotResult(plot, cells).grids()[0].image.convert("L"))
    plain = PlotResult(plan(request(), [("Steps", "1, 2"), ("CFG Scale", "1, 7")], PlotOptions(False)), cells)
    bare = np.asarray(plain.grids()[0].image)
    assert bare.shape == (128, 128, 3) and np.array_equal(bare[64:, 64:], np.asarray(cells[1, 1, 0].images[0]))
    assert (spaced[-64:, -74:-64] == 255).all() and np.array_equal(
        spaced[-64:, -64:], np.asarray(cells[1, 1, 0].images[0].convert("L")))
    assert spaced.shape[1] - 10 > bare.shape[1]  # labels at the left, one gap across


def test_seeds_kept_random_or_varied_along_an_axis():
    """A1111's "Keep -1 for seeds" (each cell draws its own) and "Vary seeds for X/Y/Z" (+ the cell's index there:
    X's 1 per column, Y's a row of X, Z's a grid)."""
    kept = plan(request(seed=-1), [("Steps", "1, 2"), ("Seed", "-1, 7")], PlotOptions(keep_random=True))
    assert [cell.seed for cell in kept.cells.values()] == [-1, 7, -1, 7]
    varied = plan(request(seed=10), [("Steps", "1, 2"), ("CFG Scale", "1, 7"), ("Denoising", "0.5, 1")],
                  PlotOptions(vary_seeds=(True, False, True)))
    assert varied.cells[1, 1, 0].seed == 11 and varied.cells[0, 1, 1].seed == 14 and varied.cells[1, 0, 1].seed == 15


def test_a_grid_keeps_the_seeds_drawn_for_its_axis():
    """A1111's "Fixed X Values": the seeds the plot ran, -1 drawn; a Z grid whose cells never ran has no parameters."""
    plot = plan(request(), [("Seed", "-1, 3"), ("Nothing", ""), ("Steps", "2, 4")], PlotOptions(sub_grids=True))
    drawn = plot.cells[0, 0, 0].seed
    grids = PlotResult(plot, _results(plot, {(1, 0, 0): "a red circle\nSteps: 2, Seed: 3, Size: 64x64"})).grids()
    fixed = f'a red circle\nSteps: 2, Seed: 3, Size: 64x64, Script: X/Y/Z plot, X Type: Seed, X Values: "-1, 3", ' \
            f'Fixed X Values: "{drawn}, 3"'
    assert [grid.infotext for grid in grids] == [fixed + ', Z Type: Steps, Z Values: "2, 4"', fixed, ""]
    kept = plan(request(), [("Seed", "-1, 3")], PlotOptions(keep_random=True))
    assert "Fixed" not in PlotResult(kept, _results(kept, {(1, 0, 0): "a\nSteps: 2"})).grids()[0].infotext


def test_a_tabs_values_ask_for_a_plot_and_it_runs_as_one_script():
    """``from_values`` reads the panel's fields (the API's script arguments become the same); the job plan runs the
    plot over its one job, never beside another script."""
    from pipelines.job_plan import plan as plan_jobs
    from pipelines.xyz import from_values

    assert from_values({"xyz": False, "xyz_x_type": "Steps"}) is None
    axes, options = from_values({"xyz": True, "xyz_x_type": "Steps", "xyz_x_values": "1, 2", "xyz_y_type": None,
                                 "xyz_legend": False, "xyz_vary_y": True, "xyz_margin": 8})
    assert axes == [("Steps", "1, 2"), ("Nothing", ""), ("Nothing", "")]
    assert options == PlotOptions(legend=False, vary_seeds=(False, True, False), margin=8)
    with pytest.raises(RequestError, match="Grid margins go from 0 to 500"):
        from_values({"xyz": True, "xyz_margin": 501})
    values = {"prompt": "a red circle", "xyz": True, "xyz_x_type": "Steps", "xyz_x_values": "1, 2"}
    planned = plan_jobs(values)
    assert len(planned.jobs) == 1 and planned.xyz[0][0] == ("Steps", "1, 2")
    with pytest.raises(RequestError, match="a prompt matrix and the X/Y/Z plot cannot run together"):
        plan_jobs({**values, "prompt": "a|b", "prompt_matrix": True})
