"""Model comparison on tiny models: shared noise, timing fields, exports, grid, and a budget that fits two of three."""

import csv
import io
import json

import numpy as np
import pytest
import torch

from pipelines.compare import COLUMNS, comparison_requests, run_comparison
from pipelines.engine import Engine
from pipelines.errors import RequestError
from pipelines.hashing import weight_files
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest

MODELS = ["tiny-a", "tiny-b", "tiny-xl"]


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory):
    """Three different tiny models: two SD (other weights) and an SDXL, all with 4x32x32 latents at 64x64."""
    from training.tiny_random import build_tiny_sd, build_tiny_sdxl

    root = tmp_path_factory.mktemp("compare-models")
    for name, pipe in zip(MODELS, (build_tiny_sd(1), build_tiny_sd(2), build_tiny_sdxl(3))):
        pipe.save_pretrained(root / "Stable-diffusion" / name)
    return root


def make_engine(models_dir, tmp_path, budget=None):
    registry = Registry(models_dir, device="cpu", memory_budget=budget)
    return Engine(registry, OutputWriter(tmp_path / "out"), preview_every=0)


def request(**values):
    return GenerationRequest(**{"prompt": "a red circle", "width": 64, "height": 64, "steps": 3, "seed": 11, **values})


def compare(engine, models=MODELS, **options):
    events = list(run_comparison(engine.stream, comparison_requests(request(), models, engine.registry), **options))
    return events[:-1], events[-1]


def test_models_with_the_same_latent_shape_start_from_identical_noise(compare_dir, tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    started = []
    for cls in (StableDiffusionPipeline, StableDiffusionXLPipeline):
        def record(self, *args, _original=cls.prepare_latents, **kwargs):
            latents = _original(self, *args, **kwargs)
            started.append(latents.clone())
            return latents
        monkeypatch.setattr(cls, "prepare_latents", record)
    _, comparison = compare(make_engine(compare_dir, tmp_path))
    assert len(started) == 3 and started[0].shape == (1, 4, 32, 32)
    assert all(torch.equal(started[0], other) for other in started[1:])
    pictures = [np.asarray(run.result.images[0], dtype=np.int16) for run in comparison.runs]
    assert np.abs(pictures[0] - pictures[1]).mean() > 1  # the models differ, the noise does not
    assert comparison.shared_noise() == [{"latent_shape": "4x32x32", "models": MODELS}]
    assert all("Seed: 11," in run.result.infotexts[0] and "RNG: CPU" in run.result.infotexts[0]
               for run in comparison.runs)


def test_timings_are_present_and_consistent_and_first_run_is_cold(compare_dir, tmp_path):
    progress, comparison = compare(make_engine(compare_dir, tmp_path), MODELS[:2], repeats=2, warmup=True)
    assert len(progress) == 2 * 3 * 3  # models x runs x steps
    assert progress[-1].fraction == 1.0 and "Model 2/2 (tiny-b), run 3/3: step 3/3" == progress[-1].describe()
    for run in comparison.runs:
        assert run.first.cold and run.first.load_s > 0 and len(run.timed) == 2
        assert not any(s.cold for s in run.timed)
        for stats in (run.first, *run.timed):
            assert stats.steps == 3 and stats.denoise_s > 0 and stats.decode_s > 0
            assert stats.total_s >= stats.load_s + stats.denoise_s + stats.decode_s
            assert stats.parameters > 100_000 and stats.peak_memory > 0 and stats.memory_kind == "process RSS peak"
        row = run.row()
        assert row["load"] == "cold" and row["timed_runs"] == 2 and row["it_per_s"] > 0
        assert row["total_s"] >= row["denoise_s"] + row["decode_s"] - 0.002  # medians of consistent runs, rounded
    assert len(list((tmp_path / "out").rglob("*.png"))) == 2  # only each model's first run is saved


def test_csv_json_and_grid_exports(compare_dir, tmp_path):
    _, comparison = compare(make_engine(compare_dir, tmp_path))
    rows = list(csv.DictReader(io.StringIO(comparison.csv())))
    assert [r["model"] for r in rows] == MODELS and list(rows[0]) == list(COLUMNS)
    assert float(rows[0]["total_s"]) > 0 and rows[2]["latent_shape"] == "4x32x32"
    data = json.loads(comparison.json())
    assert data["seed"] == 11 and [r["model"] for r in data["results"]] == MODELS
    assert data["results"][0]["runs"][0]["steps"] == 3 and "Model: tiny-a" in data["results"][0]["infotext"]
    grid = comparison.grid()
    cell = grid.width // 3  # cells widen to fit their labels; pictures are centred
    assert grid.width >= 3 * 64 and grid.height > 64
    pixels = np.asarray(grid.convert("L"))
    label_band = pixels[: grid.height - 64]
    for column in range(3):  # every picture has its label (dark text) above it
        assert (label_band[:, column * cell:(column + 1) * cell] < 128).any()
    x = (cell - 64) // 2
    assert np.array_equal(pixels[grid.height - 64:, x:x + 64],
                          np.asarray(comparison.runs[0].result.images[0].convert("L")))


def test_three_models_under_a_budget_that_fits_two(compare_dir, tmp_path):
    engine = make_engine(compare_dir, tmp_path)
    sizes = []  # what the registry estimates before loading (the files) or counts after, whichever is larger
    for name in MODELS:
        with engine.registry.lease(name) as model:
            files = sum(f.stat().st_size for f in weight_files(compare_dir / "Stable-diffusion" / name))
            sizes.append(max(model.nbytes, files))
        engine.registry.unload(name)
    budget = sum(sorted(sizes)[1:]) + 1024  # the two largest, not all three
    assert budget < sum(sizes)
    engine = make_engine(compare_dir, tmp_path, budget=budget)
    _, comparison = compare(engine)
    assert [run.row()["model"] for run in comparison.runs] == MODELS and all(r.first.cold for r in comparison.runs)
    resident = [r["name"] for r in engine.registry.resident()]
    assert len(resident) == 2 and "tiny-xl" in resident
    assert sum(r["bytes"] for r in engine.registry.resident()) <= budget


def test_presets_and_model_count(compare_dir, tmp_path):
    registry = Registry(compare_dir, device="cpu")
    base = request(steps=5, cfg_scale=3)
    with_presets = comparison_requests(base, MODELS[:2], registry, use_presets=True)
    assert [(r.steps, r.cfg_scale, r.width) for r in with_presets] == [(20, 7.0, 64)] * 2
    assert with_presets[0].seed == with_presets[1].seed == 11
    with pytest.raises(RequestError, match="2 to 9"):
        comparison_requests(base, ["tiny-a", "tiny-a"], registry)
    with pytest.raises(RequestError, match="Unknown model"):
        comparison_requests(base, ["tiny-a", "nope"], registry)
