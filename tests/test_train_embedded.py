"""The Train tab's meaning: an embedding made from "*" and trained on a folder of purple shapes on orange (captions
from the file names, A1111's style template) makes easel-shapes draw purple on orange where its word stands, which
it never does for the untrained word. Pictures are read by the project's pixel classifier (training/classify.py)."""

import random
from pathlib import Path

import pytest

from pipelines.embedding_training import CreateRequest, TrainRequest, create_embedding, train_embedding
from pipelines.engine import Engine
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest
from training.classify import classify
from training.shapes import POSITION_PHRASES, POSITIONS, SHAPES, SIZES, Scene, make_item, render

MODEL = Path(__file__).resolve().parent.parent / "models" / "Stable-diffusion" / "easel-shapes"
PROMPTS = [f"a large {shape}, in dusk" for shape in ("circle", "square", "star", "triangle")] * 2


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "Stable-diffusion").mkdir()
    (root / "Stable-diffusion" / MODEL.name).symlink_to(MODEL)
    return Engine(Registry(root, device="cpu"), OutputWriter(tmp_path_factory.mktemp("outputs")))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """16 purple shapes on orange, each named by what it shows ("00003-large star in the top left corner.png")."""
    folder = tmp_path_factory.mktemp("dusk")
    rng = random.Random(0)
    for index in range(16):
        shape, size, position = rng.choice(SHAPES), rng.choice(SIZES), rng.choice(list(POSITIONS))
        scene = Scene("orange", make_item(shape, "purple", size, position, rng))
        render(scene).save(folder / f"{index:05d}-{size} {shape} {POSITION_PHRASES[position]}.png")
    return folder


def purple_on_orange(engine) -> int:
    hits = 0
    for seed, prompt in enumerate(PROMPTS):
        made = engine.generate(GenerationRequest(prompt=prompt, model=MODEL.name, width=64, height=64, steps=20,
                                                 sampler="Euler a", cfg_scale=7, seed=seed), save=False)
        read = classify(made.images[0])
        hits += (read.colour, read.background) == ("purple", "orange")
    return hits


def test_a_trained_embedding_draws_its_pictures_colours(engine, pictures):
    create_embedding(engine, CreateRequest("dusk", "*", 4, model=MODEL.name))
    assert purple_on_orange(engine) <= 2  # measured: 0 of 8
    done = train_embedding(engine, TrainRequest("dusk", str(pictures), model=MODEL.name, learn_rate="0.05",
                                                batch_size=8, training_width=64, training_height=64, steps=100,
                                                create_image_every=0, save_embedding_every=0, seed=0))
    assert done.step == 100 and not done.interrupted
    assert purple_on_orange(engine) >= 6  # measured: 8 of 8
