"""The Image Browser's listing: which pictures, in which order, found by which words, a page at a time."""

from __future__ import annotations

import datetime
import os

import pytest
from PIL import Image

from pipelines.outputs import OutputWriter
from pipelines.saved_images import THUMBNAIL, delete, saved_images
from ui.image_browser import PAGE_SIZE, _page

DAY = datetime.date(2026, 11, 1)


def _save(writer: OutputWriter, prompt: str, seed: int, category: str = "txt2img-images", age: int = 0,
          size=(64, 64)):
    path = writer.save(Image.new("RGB", size, "red"), f"{prompt}\nSteps: 20, Seed: {seed}, Size: 64x64", seed,
                       category, when=DAY)
    stamp = 1_800_000_000 - age
    os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def outputs(tmp_path):
    writer = OutputWriter(tmp_path)
    paths = {
        "old": _save(writer, "a red circle", 1, age=300),
        "grid": _save(writer, "a red circle", 1, "txt2img-grids", age=200),
        "img2img": _save(writer, "a Blue square, at night", 2, "img2img-images", age=100),
        "saved": _save(writer, "a blue circle", 3, "log/images", age=0),
    }
    folder = tmp_path / "txt2img-images" / DAY.isoformat()
    (folder / ".tmp-half.png").write_bytes(b"half written")  # a save in progress
    (folder / "notes.txt").write_text("not a picture")
    return tmp_path, paths


def test_every_folder_newest_first_without_files_being_written(outputs):
    root, paths = outputs
    assert [image.path for image in saved_images(root)] == [paths[k] for k in ("saved", "img2img", "grid", "old")]


def test_one_folder(outputs):
    root, paths = outputs
    assert [image.path for image in saved_images(root, "txt2img")] == [paths["old"]]
    assert [image.path for image in saved_images(root, "Saved")] == [paths["saved"]]
    assert [image.path for image in saved_images(root, "Extras")] == []
    with pytest.raises(ValueError, match="Unknown folder 'outputs'"):
        saved_images(root, "outputs")


def test_search_needs_every_word_in_any_case(outputs):
    root, paths = outputs
    assert [image.path for image in saved_images(root, search="BLUE")] == [paths["saved"], paths["img2img"]]
    assert [image.path for image in saved_images(root, search="blue night")] == [paths["img2img"]]
    assert [image.path for image in saved_images(root, search="seed: 1")] == [paths["grid"], paths["old"]]
    assert saved_images(root, search="green") == []


def test_a_jpeg_is_found_by_its_exif_parameters_and_a_rewritten_file_is_read_again(tmp_path):
    writer = OutputWriter(tmp_path, format="jpg")
    path = _save(writer, "a yellow star", 5, size=(1024, 512))
    (image,) = saved_images(tmp_path, search="yellow")
    assert image.thumbnail.size == (THUMBNAIL, THUMBNAIL // 2)
    Image.new("RGB", (8, 8)).save(path)  # the same name, other contents: no parameters now
    os.utime(path, (1_900_000_000, 1_900_000_000))
    assert saved_images(tmp_path, search="yellow") == []


def test_pages_stay_within_the_pictures_there_are(tmp_path):
    writer = OutputWriter(tmp_path)
    for seed in range(PAGE_SIZE + 4):
        _save(writer, "a red circle", seed, age=seed)
    gallery, shown, number, where = _page(tmp_path, "All", "", 2)
    assert number == 2 and len(gallery["value"]) == len(shown) == 4 and gallery["selected_index"] is None
    assert [caption for _, caption in gallery["value"]] == [f"{n:05d}-{n}.png" for n in range(PAGE_SIZE, PAGE_SIZE + 4)]
    assert where == f"Page 2 of 2: pictures {PAGE_SIZE + 1}-{PAGE_SIZE + 4} of {PAGE_SIZE + 4}, newest first."
    assert _page(tmp_path, "All", "", 99)[2] == 2 and _page(tmp_path, "All", "", 0)[2] == 1
    assert _page(tmp_path, "All", "", None)[1][0].path.name == "00000-0.png"  # the newest
    assert _page(tmp_path, "All", "green", 1)[1:] == ([], 1, "No picture matches these words.")
    assert _page(tmp_path / "empty", "All", "", 1)[3] == "No pictures saved here yet."


def test_delete_removes_the_picture_and_its_text_and_nothing_outside(outputs, tmp_path_factory):
    root, paths = outputs
    paths["old"].with_suffix(".txt").write_text("its parameters")
    old = next(image for image in saved_images(root) if image.path == paths["old"])
    assert delete(root, old) == [paths["old"].resolve(), paths["old"].with_suffix(".txt").resolve()]
    assert not paths["old"].exists() and paths["old"] not in [image.path for image in saved_images(root)]
    assert delete(root, old) == []  # gone already: nothing to do
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "keep.png"
    Image.new("RGB", (8, 8)).save(elsewhere)
    link = paths["grid"].parent / "link.png"
    link.symlink_to(elsewhere)
    linked = next(image for image in saved_images(root) if image.path == link)
    with pytest.raises(ValueError, match="not a picture of the outputs folder"):
        delete(root, linked)
    assert elsewhere.exists()
