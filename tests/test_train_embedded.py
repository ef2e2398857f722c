"""The Train tab's meaning on easel-shapes. An embedding made from "*" and trained on a folder of purple shapes on
orange (captions from the file names, A1111's style template) makes the model draw purple on orange where its word
stands, which it never does for the untrained word. A hypernetwork trained on shapes of many colours on orange is a
style: with it every prompt's picture is on orange, in the colour the prompt names. Pictures are read by the
project's pixel classifier (training/classify.py)."""

import random
from pathlib import Path

import pytest
import torch

from pipelines.embedding_training import CreateRequest, TrainEmbeddingRequest, create_embedding, train_embedding
from pipelines.engine import Engine
from pipelines.hypernetwork_training import (CreateHypernetworkRequest, TrainHypernetworkRequest, create_hypernetwork,
                                             train_hypernetwork)
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest
from training.classify import classify
from training.shapes import POSITION_PHRASES, POSITIONS, SHAPES, SIZES, Scene, make_item, render

MODEL = Path(__file__).resolve().parent.parent / "models" / "Stable-diffusion" / "easel-shapes"
PROMPTS = [f"a large {shape}, in dusk" for shape in ("circle", "square", "star", "triangle")] * 2
COLOURED = [f"a large {colour} {shape}" for colour, shape in zip(("red", "green", "blue", "white", "purple", "black",
                                                                 "red", "blue"), ("circle", "square", "star",
                                                                                  "triangle") * 2)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "Stable-diffusion").mkdir()
    (root / "Stable-diffusion" / MODEL.name).symlink_to(MODEL)
    return Engine(Registry(root, device="cpu"), OutputWriter(tmp_path_factory.mktemp("outputs")))


def _shapes_on_orange(folder: Path, colours: list[str]) -> Path:
    """16 shapes in ``colours`` on orange, each named by what it shows, its colour too when there are several
    ("00003-large star in the top left corner.png", "00004-small red circle in the middle.png")."""
    rng = random.Random(0)
    for index in range(16):
        shape, size, position = rng.choice(SHAPES), rng.choice(SIZES), rng.choice(list(POSITIONS))
        colour = rng.choice(colours) if len(colours) > 1 else colours[0]  # no draw for one: the measured pictures
        words = f"{size} {colour} {shape}" if len(colours) > 1 else f"{size} {shape}"
        scene = Scene("orange", make_item(shape, colour, size, position, rng))
        render(scene).save(folder / f"{index:05d}-{words} {POSITION_PHRASES[position]}.png")
    return folder


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Purple shapes on orange, their colour left out of their names."""
    return _shapes_on_orange(tmp_path_factory.mktemp("dusk"), ["purple"])


@pytest.fixture(scope="module")
def on_orange(tmp_path_factory):
    """Shapes of many colours (never orange) on orange."""
    return _shapes_on_orange(tmp_path_factory.mktemp("on-orange"), ["red", "green", "blue", "purple", "white", "black"])


def read(engine, prompts: list[str], tag: str = ""):
    """What the classifier reads in each prompt's picture (seed = its index)."""
    for seed, prompt in enumerate(prompts):
        made = engine.generate(GenerationRequest(prompt=prompt + tag, model=MODEL.name, width=64, height=64, steps=20,
                                                 sampler="Euler a", cfg_scale=7, seed=seed), save=False)
        yield classify(made.images[0])


def purple_on_orange(engine) -> int:
    return sum((seen.colour, seen.background) == ("purple", "orange") for seen in read(engine, PROMPTS))


def test_a_trained_embedding_draws_its_pictures_colours(engine, pictures):
    create_embedding(engine, CreateRequest("dusk", "*", 4, model=MODEL.name))
    assert purple_on_orange(engine) <= 2  # measured: 0 of 8
    done = train_embedding(engine, TrainEmbeddingRequest(
        embedding_name="dusk", data_root=str(pictures), model=MODEL.name, learn_rate="0.05", batch_size=8,
        training_width=64, training_height=64, steps=100, create_image_every=0, save_embedding_every=0, seed=0))
    assert done.step == 100 and not done.interrupted
    assert purple_on_orange(engine) >= 6  # measured: 8 of 8


def test_a_trained_hypernetwork_is_a_style_that_keeps_the_prompts_colours(engine, on_orange):
    """Measured over new hypernetworks' random starts (seeds 0 to 3) and both templates: 6 to 8 of 8 on orange with
    it, every colour kept; the schedule's lower rate after step 60 settles it (a constant 0.005 ranged 3 to 8)."""
    torch.manual_seed(0)
    create_hypernetwork(engine, CreateHypernetworkRequest("sunlit", (64, 128)))  # easel-shapes' text and attention
    done = train_hypernetwork(engine, TrainHypernetworkRequest(
        hypernetwork_name="sunlit", data_root=str(on_orange), model=MODEL.name, learn_rate="0.005:60, 0.001",
        batch_size=8, training_width=64, training_height=64, steps=100, create_image_every=0,
        save_hypernetwork_every=0, seed=0, template_filename="hypernetwork.txt"))
    assert done.step == 100 and not done.interrupted
    plain, styled = list(read(engine, COLOURED)), list(read(engine, COLOURED, " <hypernet:sunlit:1>"))
    assert sum(seen.background == "orange" for seen in plain) <= 2  # measured: 1 of 8
    assert sum(seen.background == "orange" for seen in styled) >= 6  # measured: 8 of 8
    named = [prompt.split()[2] for prompt in COLOURED]
    assert sum(seen.colour == colour for seen, colour in zip(styled, named)) >= 7  # measured: 8 of 8 (plain: 8)
