"""The synthetic shapes data is deterministic and honest, and the pixel classifier that scores the
embedded model reads ground-truth pictures correctly."""

import random

import numpy as np
from PIL import Image

from training.classify import classify
from training.shapes import COLOURS, POSITIONS, SHAPES, SIZES, example, render, sample_scene


def test_generator_is_deterministic_per_seed():
    for seed in (0, 7, 12345):
        (scene_a, cap_a, img_a), (scene_b, cap_b, img_b) = example(seed), example(seed)
        assert scene_a == scene_b and cap_a == cap_b
        assert np.array_equal(np.asarray(img_a), np.asarray(img_b))
        assert img_a.size == (64, 64) and img_a.mode == "RGB"
    assert not np.array_equal(np.asarray(example(1)[2]), np.asarray(example(2)[2]))


def test_captions_mention_the_truth():
    words = {*COLOURS, *SHAPES, *SIZES}
    for seed in range(300):
        scene, caption, _ = example(seed, two_shape_prob=0.3)
        items = [scene.item] + ([scene.second] if scene.second else [])
        for item in items:
            assert f"{item.colour} {item.shape}" in caption
        named = {w for w in caption.replace(",", "").split() if w in words}
        truth = {scene.background} | {a for it in items for a in (it.colour, it.shape, it.size)}
        assert named <= truth, (caption, scene)
        if "background" in caption:
            assert f"{scene.background} background" in caption


def test_generator_covers_every_attribute():
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(400)]
    assert {s.item.shape for s in scenes} == set(SHAPES)
    assert {s.item.colour for s in scenes} == set(COLOURS)
    assert {s.background for s in scenes} == set(COLOURS)
    assert {s.item.position for s in scenes} == set(POSITIONS)
    assert {s.item.size for s in scenes} == set(SIZES)
    assert any(s.second for s in scenes)
    assert all(s.item.colour != s.background for s in scenes)


def test_classifier_reads_ground_truth_pictures():
    rng = random.Random(2024)
    attributes = ("background", "colour", "shape", "size", "position")
    correct = dict.fromkeys(attributes, 0)
    n = 320
    for _ in range(n):
        scene = sample_scene(rng, two_shape_prob=0.0)
        pred = classify(render(scene))
        truth = {"background": scene.background, **{a: getattr(scene.item, a) for a in attributes[1:]}}
        for a in attributes:
            correct[a] += getattr(pred, a) == truth[a]
    accuracy = {a: correct[a] / n for a in attributes}
    assert all(v >= 0.98 for v in accuracy.values()), accuracy


def test_classifier_finds_no_shape_on_a_plain_picture():
    pred = classify(Image.new("RGB", (64, 64), COLOURS["purple"]))
    assert pred.background == "purple"
    assert pred.colour is pred.shape is pred.position is None
