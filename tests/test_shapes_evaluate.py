"""The fixed evaluation set of the embedded model is balanced and stable, and its prompts say
everything the classifier checks."""

from collections import Counter

from training.evaluate import contradicting, eval_scenes, format_img2img_report, format_report
from training.shapes import COLOURS, POSITIONS, POSITION_PHRASES, SHAPES, full_caption


def test_eval_set_is_fixed_and_balanced():
    scenes = eval_scenes(64)
    assert scenes == eval_scenes(64)
    assert Counter(s.item.shape for s in scenes) == {shape: 16 for shape in SHAPES}
    assert Counter(s.item.colour for s in scenes) == {colour: 8 for colour in COLOURS}
    assert set(s.item.position for s in scenes) == set(POSITIONS)
    assert set(s.background for s in scenes) == set(COLOURS)
    assert all(s.background != s.item.colour and s.second is None for s in scenes)


def test_eval_prompts_name_every_checked_attribute():
    for i, scene in enumerate(eval_scenes(64)):
        prompt = full_caption(scene, i % 3)
        item = scene.item
        assert f"{item.colour} {item.shape}" in prompt and item.size in prompt
        assert POSITION_PHRASES[item.position] in prompt and f"{scene.background} background" in prompt


def test_report_flags_missed_targets():
    report = format_report(
        {
            "accuracy": {"colour": 0.95, "shape": 0.5, "position": 0.9, "background": 1.0, "size": 0.9},
            "seconds_per_picture": 0.5,
            "pictures": 128,
        }
    )
    assert "| shape | 50.0% | >= 75% MISSED |" in report and "| colour | 95.0% | >= 90% met |" in report
    assert "128 pictures" in report


def test_the_img2img_prompt_contradicts_shape_colour_and_background_but_not_size_or_place():
    for scene in eval_scenes(64):
        new = contradicting(scene)
        assert new.item.shape != scene.item.shape and new.background != scene.background
        assert new.item.colour not in (scene.item.colour, scene.background, new.background)
        assert (new.item.size, new.item.position) == (scene.item.size, scene.item.position)


def test_img2img_report_has_a_row_per_strength():
    report = format_img2img_report({0.3: {"kept": {"colour": 1.0, "shape": 0.5, "background": 0.75}, "followed": 0.0}})
    assert "| 0.3 | 100.0% | 50.0% | 75.0% | 0.0% |" in report
