"""Browser tests of the speed features: the Step cache setting labels the picture's infotext; the cheap live
preview (a pixel per latent) shows while a picture is made, scaled up by the browser."""

from __future__ import annotations

import re

import pytest

from browser_support import ARTIFACTS, GENERATION_TIMEOUT_MS, open_page, set_number, set_numbers
from playwright.sync_api import expect


@pytest.fixture(scope="module")
def page(app_url):
    with open_page(app_url) as page:
        yield page


def test_step_cache_labels_the_infotext(page):
    page.locator("#txt2img_prompt textarea").fill("a red circle")
    for elem_id, value in (("txt2img_steps", 4), ("txt2img_seed", 7), ("txt2img_step_cache", 2)):
        set_number(page, elem_id, value)
    info = page.locator("#txt2img_info textarea")
    page.locator("#txt2img_generate").click()
    expect(info).to_have_value(re.compile(r"Steps: 4, .*Step cache: 2"), timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#txt2img_gallery img").first).to_be_visible()
    page.locator("#txt2img_step_cache").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "step_cache.png"), full_page=True, animations="disabled")


def test_live_preview_shows_while_generating(page):
    # the app previews every 5 steps: time to see several, at a size whose steps leave a preview time to load (at
    # 64x64 a busy CI machine replaced each before its picture arrived, and none ever loaded); both boxes checked kept
    sizes = {"txt2img_width": 256, "txt2img_height": 256}
    set_numbers(page, {"txt2img_step_cache": 0, "txt2img_steps": 40, **sizes})
    info = page.locator("#txt2img_info textarea")
    before = info.input_value()
    # each preview that loads: its size and its shown height, read as it loads (under load a preview can be replaced
    # by the next, or by the finished picture, before a look from here finds it loaded)
    page.evaluate("""() => {
        window.previewLoads = [];
        document.addEventListener("load", (event) => {
            const img = event.target;
            if (img.closest?.("#txt2img_preview")) {
                window.previewLoads.push([img.naturalWidth, img.naturalHeight, img.getBoundingClientRect().height]);
            }
        }, true);
    }""")
    page.locator("#txt2img_generate").click()
    *natural, shown = page.wait_for_function("() => window.previewLoads.find((load) => load[2] > 0)",
                                             timeout=GENERATION_TIMEOUT_MS).json_value()
    page.screenshot(path=str(ARTIFACTS / "live_preview.png"), full_page=True, animations="disabled")
    assert natural == [128, 128]  # tiny-sd's latents at 256x256: the server sends one pixel per latent
    assert shown >= 1.8 * natural[1]  # and the browser scales it to the panel
    expect(info).not_to_have_value(before, timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#txt2img_preview")).to_be_hidden()  # the finished picture replaces it
    set_numbers(page, {"txt2img_steps": 4, "txt2img_width": 64, "txt2img_height": 64})
