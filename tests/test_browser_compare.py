"""Browser test of the Compare tab: in headless Chromium, pick two tiny models, compare them, and see their
pictures, the results table and the three exports; then run an X/Y/Z plot, see its grid and find it saved."""

from __future__ import annotations

import csv
import io
import itertools
import re

import numpy as np
import pytest
from PIL import Image

from browser_support import (ARTIFACTS, GENERATION_TIMEOUT_MS, open_page, open_tab, pick, set_number, set_numbers,
                             set_text)
from playwright.sync_api import expect


@pytest.fixture(scope="module")
def page(app_url):
    with open_page(app_url, height=1400) as page:
        tab = page.get_by_role("tab", name="Compare", exact=True)
        tab.click()
        expect(tab).to_have_attribute("aria-selected", "true")
        yield page


def test_compare_two_models(page):
    models = page.locator("#compare_models input")
    for name in ("tiny-sd", "tiny-sdxl"):
        models.click()
        page.get_by_role("option", name=name, exact=True).click()
    page.locator("#compare_prompt textarea").fill("a red circle")
    set_number(page, "compare_steps", 3)
    set_number(page, "compare_seed", 42)
    page.locator("#compare_run").click()

    table = page.locator("#compare_table")
    expect(table).to_contain_text("tiny-sdxl", timeout=GENERATION_TIMEOUT_MS)
    expect(table).to_contain_text("cold")
    expect(page.locator("#compare_gallery img")).to_have_count(2)
    expect(page.locator("#compare_note")).to_contain_text("Seed 42. Shared starting noise by latent shape: "
                                                          "4x32x32: tiny-sd, tiny-sdxl")
    links = page.locator("#compare_files a")
    expect(links).to_have_count(3)
    hrefs = [links.nth(i).get_attribute("href") for i in range(3)]
    csv_href = next(h for h in hrefs if h.endswith(".csv"))
    rows = list(csv.DictReader(io.StringIO(page.request.get(csv_href).text())))
    assert [r["model"] for r in rows] == ["tiny-sd", "tiny-sdxl"] and all(float(r["total_s"]) > 0 for r in rows)
    assert any(h.endswith("comparison-grid.png") for h in hrefs)
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True, animations="disabled")


def test_xyz_plot(page):
    """Steps 1-3 across, 40 px of grid margin: the grid's last row of pixels crosses the three pictures with two
    white gaps of at least 40 px between them. The grid carries its parameters with the axes (A1111's) and is saved
    to txt2img-grids, where the Image Browser finds it."""
    page.locator("#xyz_plot").get_by_text("X/Y/Z plot").first.click()
    set_text(page, "compare_xyz_x_values", "1-3")
    set_numbers(page, {"compare_xyz_margin": 40})  # again if the panel, mounting, takes it back
    expect(page.locator("#compare_xyz_margin input[type=number]")).to_have_value("40")  # kept while the panel mounted
    page.locator("#xyz_run").click()
    grid = page.locator("#xyz_gallery .thumbnail-lg img")  # the gallery's items (the grid also opened above them)
    expect(grid).to_have_count(1, timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#xyz_gallery [data-testid=detailed-image]")).to_be_visible()
    expect(page.locator("#xyz_files a")).to_have_count(1)
    grid.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "compare_xyz.png"), full_page=True, animations="disabled")
    picture = Image.open(io.BytesIO(page.request.get(grid.first.get_attribute("src")).body())).convert("RGB")
    white = (np.asarray(picture)[-1] >= 250).all(axis=1)  # the last row: the pictures' bottom edge
    runs = [len(list(group)) for is_white, group in itertools.groupby(white) if is_white]
    assert len([run for run in runs if run >= 40]) == 2 and not white.all(), runs
    exported = Image.open(io.BytesIO(page.request.get(page.locator("#xyz_files a").first.get_attribute("href")).body()))
    assert exported.info["parameters"].endswith(", Script: X/Y/Z plot, X Type: Steps, X Values: 1-3")

    open_tab(page, "Image Browser")
    pick(page, "browser_folder", "txt2img grids")
    page.locator("#browser_search textarea").fill("X/Y/Z 1-3")  # this plot's (other modules' plots share the app)
    page.locator("#browser_search textarea").press("Enter")
    expect(page.locator("#browser_where")).to_contain_text("pictures 1-1 of 1,")
    page.locator("#browser_gallery .thumbnail-item").first.click()
    expect(page.locator("#browser_file textarea")).to_have_value(re.compile(r"^txt2img-grids/"))
    expect(page.locator("#browser_text textarea")).to_have_value(exported.info["parameters"])


def test_xyz_plot_options(page):
    """A1111's options: without "Draw legend" the grid is the pictures alone; "Include Sub Grids" adds each Z value's
    grid after the grid of them all, "Include Sub Images" every cell's picture after the grids."""
    open_tab(page, "Compare")
    set_text(page, "compare_xyz_x_values", "1-2")
    pick(page, "compare_xyz_z_type", "CFG Scale")
    set_text(page, "compare_xyz_z_values", "1, 7")
    set_number(page, "compare_xyz_margin", 0)
    for name in ("legend", "sub_grids", "sub_images"):
        page.locator(f"#compare_xyz_{name} input").click()
    page.locator("#xyz_run").click()
    pictures = page.locator("#xyz_gallery .thumbnail-lg img")
    expect(pictures).to_have_count(1 + 2 + 4, timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#xyz_files a")).to_have_count(3)
    page.screenshot(path=str(ARTIFACTS / "compare_xyz_options.png"), full_page=True, animations="disabled")
    sizes = [Image.open(io.BytesIO(page.request.get(pictures.nth(i).get_attribute("src")).body())).size
             for i in range(7)]
    assert sizes == [(4 * 64, 64), (2 * 64, 64), (2 * 64, 64)] + [(64, 64)] * 4
