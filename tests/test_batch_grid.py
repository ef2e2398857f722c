"""A1111's grid of a job's pictures, first in the gallery: its layout, and which plans have one."""

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pipelines.grid import BatchLayout, batch_grid
from pipelines.job_plan import grids, plan

COLOURS = ["red", "green", "blue", "yellow", "purple"]


def pictures(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (64, 48), colour) for colour in COLOURS[:count]]


@pytest.mark.parametrize("count, rows, columns", [(2, 1, 2), (3, 2, 2), (4, 2, 2), (5, 2, 3)])
def test_round_sqrt_rows_and_the_pictures_in_order(count, rows, columns):
    """A1111's ``image_grid`` with its default ``n_rows`` (-1): round(sqrt(n)) rows, the columns they need."""
    grid = batch_grid(pictures(count))
    assert grid.size == (64 * columns, 48 * rows)
    cells = np.asarray(grid)
    for index, picture in enumerate(pictures(count)):
        top, left = 48 * (index // columns), 64 * (index % columns)
        assert np.array_equal(cells[top:top + 48, left:left + 64], np.asarray(picture)), COLOURS[index]


@pytest.mark.parametrize("n_rows, batch_size, rows, columns", [(1, 1, 1, 5), (3, 1, 3, 2), (9, 1, 5, 1),
                                                                 (0, 2, 2, 3), (0, 1, 1, 5)])
def test_the_n_rows_setting(n_rows, batch_size, rows, columns):
    """A1111's ``n_rows``: that many rows (at most one a picture), or with 0 as many as the batch size."""
    assert batch_grid(pictures(5), BatchLayout(n_rows), batch_size).size == (64 * columns, 48 * rows)


@pytest.mark.parametrize("count, rows, columns", [(5, 1, 5), (4, 2, 2), (3, 1, 3), (2, 1, 2)])
def test_no_empty_spots_takes_the_most_rows_that_divide_the_pictures(count, rows, columns):
    """A1111's grid_prevent_empty_spots (with n_rows -1): no blank cell at the end of the last row."""
    grid = batch_grid(pictures(count), BatchLayout(no_empty_spots=True))
    assert grid.size == (64 * columns, 48 * rows)


def result(count: int, **request) -> SimpleNamespace:
    return SimpleNamespace(images=pictures(count), infotexts=[f"picture {i}" for i in range(count)],
                           request=SimpleNamespace(loopback=False, batch_size=1, **request))


def test_a_plain_job_of_two_or_more_pictures_has_a_grid_with_the_first_pictures_infotext():
    [(grid, text, batch, basename)] = grids([plan({"prompt": "x"})], [result(3)])
    assert grid.size == (128, 96) and text == "picture 0" and batch and basename == "grid"
    assert grids([plan({"prompt": "x"})], [result(3)], layout=BatchLayout(1))[0].image.size == (192, 48)
    assert grids([plan({"prompt": "x"})], [result(1)]) == []  # one picture: no grid (A1111's grid_only_if_multiple)
    [(grid, *_)] = grids([plan({"prompt": "x"})], [result(1)], layout=BatchLayout(single=True))
    assert grid.size == (64, 48)
    assert grids([plan({"prompt": "x"})], [result(2)], batch=False) == []  # the API without save_images


@pytest.mark.parametrize("plans", [
    [plan({"prompt_lines": "a cat\na dog"})],  # A1111's prompt list sets do_not_save_grid
    [plan({"sd_upscale": True})],  # so does SD upscale
    [plan({"prompt": "x"}), plan({"prompt": "x"})],  # and img2img's batch folder: a plan per picture
])
def test_scripts_and_batch_folders_have_no_batch_grid(plans):
    assert grids(plans, [result(2) for _ in range(sum(len(each.jobs) for each in plans))]) == []


def test_with_none_picked_send_to_takes_the_first_picture_not_the_grid(tmp_path):
    from ui.common import GRID, gallery_picture

    files = []
    for name, picture in (("grid", batch_grid(pictures(2))), *zip(("a", "b"), pictures(2))):
        files.append(str(tmp_path / f"{name}.png"))
        picture.save(files[-1])
    gallery = [(files[0], GRID), (files[1], "Seed 1"), (files[2], "Seed 2")]
    picture, caption, index = gallery_picture(gallery, -1)  # none picked
    assert (caption, index, picture.getpixel((0, 0))) == ("Seed 1", 1, (255, 0, 0))
    assert gallery_picture(gallery, 0)[1:] == (GRID, 0) and gallery_picture(gallery, 2)[1:] == ("Seed 2", 2)
