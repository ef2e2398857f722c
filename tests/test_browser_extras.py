"""The Extras tab's batches in a browser, on an app of its own: a server folder made into a training set (split,
flipped, named after its sources with their captions beside them), uploaded pictures, and a folder that is not one."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from browser_support import ARTIFACTS, GENERATION_TIMEOUT_MS, open_page, open_tab, set_numbers, set_text
from playwright.sync_api import expect


@pytest.fixture(scope="module")
def served(models_dir, tmp_path_factory, serve_app):
    outputs = tmp_path_factory.mktemp("extras-outputs")
    with serve_app(models_dir, outputs=outputs) as url, open_page(url) as page:
        yield page, outputs


def _stripes(path, width: int, height: int):
    values = (np.arange(width) // 16 * 37 % 256).astype(np.uint8)
    Image.fromarray(np.stack([np.tile(values, (height, 1))] * 3, axis=-1)).save(path)
    return path


def test_a_folder_becomes_a_split_flipped_and_captioned_training_set(served, tmp_path):
    page, outputs = served
    source = tmp_path / "photos"
    source.mkdir()
    _stripes(source / "beach.png", 256, 128)  # twice as wide as the 128x128 asked for: split in two
    (source / "beach.txt").write_text("a striped beach")
    _stripes(source / "field.png", 128, 128)
    open_tab(page, "Extras")
    open_tab(page, "Batch from Directory")
    set_text(page, "extras_batch_input_dir", str(source))
    set_text(page, "extras_batch_output_dir", "training-set")
    page.locator("#extras_resize_mode").get_by_text("Scale to", exact=True).click()
    set_numbers(page, {"extras_upscaling_resize_w": 128, "extras_upscaling_resize_h": 128})
    page.locator("#extras_split_panel").get_by_text("Split oversized images", exact=True).first.click()
    page.locator("#extras_split_oversized input").check()
    set_numbers(page, {"postprocess_overlap_ratio": 0})
    page.locator("#extras_flip_panel").get_by_text("Create flipped copies", exact=True).first.click()
    page.locator("#extras_flipped_copies input").check()
    page.locator("#extras_generate").click()
    expect(page.locator("#extras_info textarea")).to_have_value(
        "Postprocess upscale to: 128x128, Postprocess crop to fit: True, Postprocess upscaler: None\n"
        f"6 pictures from 2 sources, saved in {outputs / 'training-set'}", timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#extras_result img")).to_have_count(6)  # beach: 2 pieces and their copies; field and its
    page.screenshot(path=str(ARTIFACTS / "extras_batch.png"), full_page=True, animations="disabled")
    folder = outputs / "training-set"
    assert sorted(path.name for path in folder.iterdir()) == [
        "beach-1.png", "beach-1.txt", "beach-2.png", "beach-2.txt", "beach-3.png", "beach-3.txt", "beach.png",
        "beach.txt", "field-1.png", "field.png"]
    assert {(folder / name).read_text() for name in ("beach.txt", "beach-3.txt")} == {"a striped beach"}
    with Image.open(folder / "beach.png") as first, Image.open(folder / "beach-1.png") as mirrored:
        assert first.size == (128, 128) and np.array_equal(np.asarray(mirrored), np.asarray(first)[:, ::-1])

    page.locator("#extras_show_extras_results input").uncheck()  # A1111's: saved, not shown
    set_text(page, "extras_batch_input_dir", str(tmp_path / "nowhere"))
    page.locator("#extras_generate").click()
    toast = page.get_by_role("status").filter(has_text="is not a folder on the server")
    expect(toast).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    toast.get_by_role("button", name="Close", exact=True).click()


def test_uploaded_pictures_are_processed_and_named_after_their_files(served, tmp_path):
    page, outputs = served
    open_tab(page, "Extras")
    open_tab(page, "Batch Process")
    files = [_stripes(tmp_path / f"{name}.png", 64, 64) for name in ("left", "right")]
    page.locator("#extras_image_batch input[type=file]").set_input_files([str(path) for path in files])
    expect(page.locator("#extras_image_batch a")).to_have_count(2)  # both uploaded
    page.locator("#extras_resize_mode").get_by_text("Scale by", exact=True).click()
    page.locator("#extras_split_oversized input").uncheck()
    page.locator("#extras_flipped_copies input").uncheck()
    page.locator("#extras_generate").click()
    expect(page.locator("#extras_info textarea")).to_have_value(
        "Postprocess upscale by: 2, Postprocess upscaler: None\n"
        f"2 pictures from 2 sources, saved in {outputs / 'extras-images'}", timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#extras_result img")).to_have_count(2)
    assert sorted(path.name for path in (outputs / "extras-images").iterdir()) == ["left.png", "right.png"]

    open_tab(page, "PNG Info")  # a picture sent to Extras brings its Single Image tab back
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(files[0]))
    page.locator("#pnginfo_send_to_extras").click()
    expect(page.get_by_role("tab", name="Single Image", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#extras_image img").first).to_be_visible()
