"""Browser test of the Step cache setting: set on txt2img, it labels the picture's infotext."""

from __future__ import annotations

import re

import pytest

from browser_support import ARTIFACTS, GENERATION_TIMEOUT_MS, open_page, set_number
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
