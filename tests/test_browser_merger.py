"""The Checkpoint Merger tab in a browser, on a models folder of its own: merge two tiny models, then pick the new
one in the page's checkpoint list and generate with it."""

from __future__ import annotations

import re

import pytest

from browser_support import ARTIFACTS, GENERATION_TIMEOUT_MS, generate_in, open_page, open_tab, pick
from playwright.sync_api import expect


@pytest.fixture(scope="module")
def page(tmp_path_factory, serve_app):
    from training.tiny_random import build_tiny_sd

    root = tmp_path_factory.mktemp("merger-models")
    for name, seed in (("tiny-sd", 0), ("tiny-sd-b", 1)):
        build_tiny_sd(seed).save_pretrained(root / "Stable-diffusion" / name)
    with serve_app(root) as url, open_page(url) as page:
        yield page


def test_a_merged_model_can_be_picked_and_used_at_once(page):
    open_tab(page, "Checkpoint Merger")
    pick(page, "merger_primary", "tiny-sd")
    pick(page, "merger_secondary", "tiny-sd-b")
    page.locator("#merger_name textarea").fill("halfway")
    page.locator("#merger_merge").click()
    expect(page.locator("#merger_result textarea")).to_have_value(re.compile(r"Saved .*/Stable-diffusion/halfway\."),
                                                                  timeout=GENERATION_TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "merger.png"), full_page=True, animations="disabled")
    pick(page, "model_select", "halfway")
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a red circle")
    infotext = generate_in(page, "txt2img")
    assert "Model: halfway" in infotext, infotext
