"""A1111's "Prompt matrix": the combinations in A1111's order, their seeds, the labelled grid; one script at a time."""

import pytest
from PIL import Image

from pipelines import job_plan
from pipelines.errors import RequestError
from pipelines.prompt_matrix import PromptMatrix, from_values

TAB = {"prompt": "a house|at night|in snow, |old", "negative_prompt": "blurry|dark", "seed": 7, "batch_size": 4,
       "batch_count": 2}


def test_every_combination_in_a1111s_order_with_one_seed_or_one_each():
    jobs = PromptMatrix().jobs(TAB)
    assert [job["prompt"] for job in jobs] == [
        "a house", "a house, at night", "a house, in snow", "a house, at night, in snow", "a house, old",
        "a house, at night, old", "a house, in snow, old", "a house, at night, in snow, old"]
    assert {(job["seed"], job["batch_size"], job["batch_count"]) for job in jobs} == {(7, 1, 1)}  # a picture each
    spaced = PromptMatrix(position="start", joiner="space", different_seeds=True).jobs(TAB)
    assert [(job["prompt"], job["seed"]) for job in spaced[:4]] == [
        ("a house", 7), ("at night a house", 8), ("in snow a house", 9), ("at night in snow a house", 10)]
    negative = PromptMatrix(negative=True).jobs(TAB)
    assert [(job["prompt"], job["negative_prompt"]) for job in negative] == [
        (TAB["prompt"], "blurry"), (TAB["prompt"], "blurry, dark")]
    drawn = PromptMatrix().jobs({**TAB, "seed": -1})
    assert len({job["seed"] for job in drawn}) == 1 and drawn[0]["seed"] >= 0  # drawn once for the grid


def test_dynamic_prompts_braces_stay_whole_in_their_part():
    jobs = PromptMatrix().jobs({"prompt": "a {red|blue} house|at {dusk|night}", "seed": 1})
    assert [job["prompt"] for job in jobs] == ["a {red|blue} house", "a {red|blue} house, at {dusk|night}"]


def test_the_grid_lays_the_pictures_out_as_a1111():
    """Three parts: two across (4 columns), one down (2 rows), labels on top and at the left; a missing picture
    (interrupted) leaves its cell blank."""
    pictures = [Image.new("RGB", (200, 200), (30 * i, 0, 0)) for i in range(7)]
    grid = PromptMatrix().grid(TAB, pictures)
    assert grid.width > 4 * 200 and grid.height > 2 * 200  # room for the labels
    assert grid.getpixel((grid.width - 100, grid.height - 100)) == (255, 255, 255)  # picture 7: none
    assert grid.getpixel((grid.width - 300, grid.height - 100)) == (180, 0, 0)  # picture 6: row 1, column 2
    assert grid.getpixel((grid.width - 700, grid.height - 300)) == (0, 0, 0)  # picture 0: row 0, column 0


def test_grid_margins_put_white_between_the_cells():
    pictures = [Image.new("RGB", (200, 200), "black") for _ in range(4)]
    values = {**TAB, "prompt": "a house|at night|old"}
    plain, spaced = (PromptMatrix(margin=margin).grid(values, pictures) for margin in (0, 30))
    assert spaced.size == (plain.width + 30, plain.height + 30)  # two columns and two rows: one gap each way
    assert spaced.getpixel((spaced.width - 215, spaced.height - 100)) == (255, 255, 255)  # between the columns
    assert spaced.getpixel((spaced.width - 100, spaced.height - 215)) == (255, 255, 255)  # between the rows
    assert from_values({"prompt_matrix": True, "matrix_margin": 30.0}).margin == 30
    for bad in (-2, 502, "wide"):
        with pytest.raises(RequestError, match="Grid margins") as refused:
            from_values({"prompt_matrix": True, "matrix_margin": bad})
        assert refused.value.field == "matrix_margin"


def test_refusals_and_the_plan():
    with pytest.raises(RequestError, match="needs optional parts in the prompt, after a |") as refused:
        PromptMatrix().jobs({"prompt": "a house"})
    assert refused.value.field == "prompt"
    with pytest.raises(RequestError, match="at most 8 optional parts"):
        PromptMatrix().jobs({"prompt": "a" + "|b" * 9})
    assert from_values(TAB) is None and from_values({**TAB, "prompt_matrix": True, "matrix_negative": 1}).negative
    assert len(job_plan.plan({**TAB, "prompt_matrix": True}).jobs) == 8
    with pytest.raises(RequestError, match="cannot run together"):
        job_plan.plan({**TAB, "prompt_matrix": True, "prompt_lines": "a cat"})
