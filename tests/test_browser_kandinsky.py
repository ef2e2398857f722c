"""Browser test of Kandinsky 2.2: in headless Chromium, pick the tiny Kandinsky model (its image-mixing panel
appears and its defaults fill the tab), generate, then mix the prompt with an uploaded picture and generate again."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from browser_support import ARTIFACTS, GENERATION_TIMEOUT_MS, generate_in, open_page, pick, set_numbers
from playwright.sync_api import expect


@pytest.fixture(scope="module")
def page(kandinsky_dir, serve_app):
    with serve_app(kandinsky_dir) as url, open_page(url) as page:
        yield page


def test_pick_kandinsky_generate_and_mix_a_picture(page, tmp_path):
    mixing = page.locator("#txt2img_mixing")
    expect(mixing).to_be_hidden()  # tiny-sd, the default model, has no prior to mix with
    box = page.locator("#model_select input")
    box.click()
    box.fill("tiny-kandinsky")
    page.get_by_role("option", name="tiny-kandinsky").click()
    expect(mixing).to_be_visible()
    expect(page.locator("#txt2img_sampler input")).to_have_value("DDPM")  # the model's defaults

    page.locator("#txt2img_prompt textarea").fill("a red circle")
    info = page.locator("#txt2img_info textarea")
    page.locator("#txt2img_generate").click()
    expect(info).to_have_value(re.compile("Model: tiny-kandinsky"), timeout=GENERATION_TIMEOUT_MS)
    assert "Sampler: DDPM" in info.input_value() and "Image mix" not in info.input_value()

    mixing.get_by_text("Image mixing").first.click()
    page.locator("#txt2img_mix_enabled input").check()
    picture = tmp_path / "blue.png"
    Image.new("RGB", (64, 64), (30, 60, 220)).save(picture)
    page.locator("#txt2img_mix_image_1 input[type=file]").set_input_files(str(picture))
    expect(page.locator("#txt2img_mix_image_1 img")).to_be_visible()
    page.locator("#txt2img_generate").click()
    expect(info).to_have_value(re.compile("Image mix"), timeout=GENERATION_TIMEOUT_MS)
    assert 'Image mix: "a red circle: 0.5, image 1: 0.5"' in info.input_value(), info.input_value()
    expect(page.locator("#txt2img_gallery img").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "kandinsky-mixing.png"), full_page=True, animations="disabled")


def test_a_variation_seed_on_kandinsky(page):
    """The Variation seed panel works for Kandinsky 2.2 too (it was refused): the infotext records it."""
    pick(page, "model_select", "tiny-kandinsky")  # picked already when the module runs in order
    expect(page.locator("#txt2img_mixing")).to_be_visible()
    page.locator("#txt2img_prompt textarea").fill("a red circle")
    page.locator("#txt2img_variation").get_by_text("Variation seed", exact=True).click()
    set_numbers(page, {"txt2img_seed": 42, "txt2img_subseed": 5, "txt2img_subseed_strength": 0.5})
    infotext = generate_in(page, "txt2img")
    assert "Model: tiny-kandinsky" in infotext and "Variation seed: 5, Variation seed strength: 0.5," in infotext
    page.screenshot(path=str(ARTIFACTS / "kandinsky-variation.png"), full_page=True, animations="disabled")
