"""The Checkpoint Merger on tiny models: weighted sum and add difference are exact at their ends, the new folder is
a model the engine runs, and what cannot be merged is refused by field."""

import numpy as np
import pytest
import torch

from pipelines.errors import RequestError
from pipelines.merge import MergeRequest, merge
from pipelines.request import GenerationRequest


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from training.tiny_random import build_tiny_sd, build_tiny_sdxl

    root = tmp_path_factory.mktemp("models")
    folder = root / "Stable-diffusion"
    for name, pipe in (("a", build_tiny_sd(0)), ("b", build_tiny_sd(1)), ("c", build_tiny_sd(2)),
                       ("xl", build_tiny_sdxl())):
        pipe.save_pretrained(folder / name)
    return Engine(Registry(root), OutputWriter(root / "out", enabled=False))


def picture(engine, model: str) -> np.ndarray:
    request = GenerationRequest(prompt="a red circle", model=model, width=64, height=64, steps=3, seed=1,
                                sampler="Euler")
    return np.asarray(engine.generate(request).images[0], dtype=np.int16)


def unet(engine, model: str) -> dict:
    return engine.registry.read(engine.registry.resolve(model))[0].unet.state_dict()


def test_weighted_sum_is_each_model_at_its_ends_and_their_mean_between(engine):
    registry = engine.registry
    assert merge(registry, MergeRequest("a", "b", multiplier=0)) == "a_1-b_0"
    assert merge(registry, MergeRequest("a", "b", multiplier=1, name="all b")) == "all b"
    assert np.array_equal(picture(engine, "a_1-b_0"), picture(engine, "a"))
    assert np.array_equal(picture(engine, "all b"), picture(engine, "b"))
    merge(registry, MergeRequest("a", "b", multiplier=0.5, name="half"))
    a, b, half = unet(engine, "a"), unet(engine, "b"), unet(engine, "half")
    assert all(torch.allclose(half[key], (a[key] + b[key]) / 2, atol=1e-6) for key in a)
    assert [p.name for p in (registry.models_dir / "Stable-diffusion").iterdir() if p.name.startswith(".")] == []


def test_add_difference_moves_b_over_c_onto_a(engine):
    merge(engine.registry, MergeRequest("a", "b", "c", "Add difference", 1.0, name="moved"))
    a, b, c, moved = (unet(engine, name) for name in ("a", "b", "c", "moved"))
    assert all(torch.allclose(moved[key], a[key] + b[key] - c[key], atol=1e-5) for key in a)
    merge(engine.registry, MergeRequest("a", "b", "a", "Add difference", 1.0, name="b again"))
    assert np.array_equal(picture(engine, "b again"), picture(engine, "b"))  # A + (B - A) is B


@pytest.mark.parametrize("values, field, message", [
    ({"secondary": "xl"}, "secondary", "only models of one architecture"),
    ({"secondary": "nope"}, "secondary", "Unknown model 'nope'"),
    ({"secondary": ""}, "secondary", "needs a secondary model"),
    ({"method": "Add difference"}, "tertiary", "needs a tertiary model"),
    ({"multiplier": 2}, "multiplier", "between 0 and 1"),
    ({"name": "../evil"}, "name", "cannot be a model name"),
    ({"name": "b"}, "name", "exists already"),
])
def test_what_cannot_be_merged_is_refused_by_field(engine, values, field, message):
    before = engine.registry.names()
    with pytest.raises(RequestError, match=message) as refused:
        merge(engine.registry, MergeRequest(**{"primary": "a", "secondary": "b", **values}))
    assert refused.value.field == field and engine.registry.names() == before  # nothing written
