"""The app as a fresh clone starts it (``./start.sh``: the repository's models folder, the embedded easel-shapes as
the default model), driven in a browser; the pictures the browser receives are read for their meaning."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser_support import (ARTIFACTS, GENERATION_TIMEOUT_MS, gallery_png, generate_in, open_page, open_tab,
                             paint_on, pick, set_number, set_numbers, set_text)
from pipelines.prompt_matrix import PromptMatrix
from playwright.sync_api import expect
from training.classify import classify, patches

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def page(serve_app):
    with serve_app(MODELS, default_model=None) as url, open_page(url) as page:
        yield page


def test_txt2img_draws_what_the_prompt_says_then_img2img_recolours_it(page, tmp_path):
    page.locator("#txt2img_prompt textarea").fill("a large red circle in the center on a white background")
    set_number(page, "txt2img_seed", 3)
    infotext = generate_in(page, "txt2img")
    assert "Model: easel-shapes" in infotext and "Size: 64x64" in infotext, infotext
    drawn = classify_file(gallery_png(page, "txt2img", tmp_path / "txt2img.png"))
    assert (drawn.colour, drawn.shape, drawn.position, drawn.background) == ("red", "circle", "center", "white"), drawn
    page.screenshot(path=str(ARTIFACTS / "embedded-txt2img.png"), full_page=True, animations="disabled")

    page.locator("#txt2img_send_to_img2img").click()
    expect(page.get_by_role("tab", name="img2img", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#img2img_image img").first).to_be_visible()
    # typed until kept: under load the tab just opened can take a prompt typed as it mounts back
    set_text(page, "img2img_prompt", "a large blue circle in the center on a white background")
    # both boxes checked kept (a value typed under load can miss the click), the picture judged with what ran
    set_numbers(page, {"img2img_denoising_strength": 0.9, "img2img_seed": 3})
    infotext = generate_in(page, "img2img")
    assert "Denoising strength: 0.9" in infotext, infotext
    assert infotext.startswith("a large blue circle") and "Seed: 3," in infotext, infotext
    redrawn = classify_file(gallery_png(page, "img2img", tmp_path / "img2img.png"))
    assert (redrawn.colour, redrawn.background) == ("blue", "white"), (redrawn, infotext)
    page.screenshot(path=str(ARTIFACTS / "embedded-img2img.png"), full_page=True, animations="disabled")


def test_the_sparkles_button_runs_hires_fix_on_the_picked_picture(page, tmp_path):
    """✨ under the gallery: the second of two pictures (after A1111's grid of both), upscaled by hires fix from the
    picture itself (its seed, the Hires panel's settings, its extra noise too; hires fix's box left unticked) in its
    place beside the first, still the red circle in the center on white."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large red circle in the center on a white background")
    set_numbers(page, {"txt2img_seed": 5, "txt2img_batch_size": 2})
    try:
        generate_in(page, "txt2img")
    finally:
        set_number(page, "txt2img_batch_size", 1)
    with Image.open(gallery_png(page, "txt2img", tmp_path / "grid.png")) as grid, \
            Image.open(gallery_png(page, "txt2img", tmp_path / "second.png", "Seed 6")) as second:
        assert grid.size == (128, 64) and grid.convert("RGB").crop((64, 0, 128, 64)).tobytes() == \
            second.convert("RGB").tobytes()
    page.locator("#txt2img_gallery button[aria-label='Thumbnail 3 of 3']").click()  # after the grid, seed 6
    expect(page.locator("#txt2img_info textarea")).to_have_value(re.compile("Seed: 6,"))
    page.get_by_text("Hires. fix", exact=True).click()
    info = page.locator("#txt2img_info textarea")
    try:
        pick(page, "txt2img_hr_upscaler", "Lanczos")
        set_numbers(page, {"txt2img_denoising_strength": 0.3, "txt2img_extra_noise": 0.1, "txt2img_seed": -1})
        page.locator("#txt2img_upscale").click()
        expect(info).to_have_value(re.compile("Hires upscaler: Lanczos"), timeout=GENERATION_TIMEOUT_MS)
        expect(page.locator("#txt2img_gallery button[aria-label='Thumbnail 3 of 3']").first).to_be_attached()
        for kept in ("Grid", "Seed 5"):  # the others kept
            expect(page.locator(f"#txt2img_gallery img[alt='{kept}']").first).to_be_attached()
        page.screenshot(path=str(ARTIFACTS / "embedded-sparkles-hires.png"), full_page=True, animations="disabled")
        upscaled = gallery_png(page, "txt2img", tmp_path / "upscaled.png", "Seed 6")
        assert not page.locator("#txt2img_enable_hr input").is_checked()
    finally:
        pick(page, "txt2img_hr_upscaler", "Latent")
        set_number(page, "txt2img_extra_noise", 0)
        page.get_by_text("Hires. fix", exact=True).click()  # closed again, as the other tests find it
        page.locator("#txt2img_gallery button[aria-label='Close']").click()  # the gallery's grid, not its preview
    infotext = info.input_value()
    assert "Seed: 6," in infotext and "Size: 64x64," in infotext and "Denoising strength: 0.3," in infotext, infotext
    assert "Extra noise: 0.1," in infotext, infotext
    with Image.open(upscaled) as picture:
        assert picture.size == (128, 128)
        drawn = classify(picture.convert("RGB").resize((64, 64), Image.LANCZOS))
    assert (drawn.colour, drawn.shape, drawn.position, drawn.background) == ("red", "circle", "center", "white"), drawn


def test_the_embedded_textual_inversion_word_works_from_the_prompt_box(page, tmp_path):
    """``easel-sunset`` (models/embeddings) is a purple shape on orange."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a square in easel-sunset")
    set_number(page, "txt2img_seed", 1)
    generate_in(page, "txt2img")
    drawn = classify_file(gallery_png(page, "txt2img", tmp_path / "sunset.png"))
    assert (drawn.colour, drawn.background) == ("purple", "orange"), drawn


def test_a_shipped_style_picked_in_the_list_changes_the_picture(page, tmp_path):
    """models/styles.csv's "Night": the prompt as it ran, on a black background."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a red circle")
    set_number(page, "txt2img_seed", 0)

    def toggle_night():  # an option of a multiselect list picks it, or takes it back
        page.locator("#txt2img_styles input").click()
        page.get_by_role("option", name="Night").click()
        page.keyboard.press("Escape")

    toggle_night()
    try:
        infotext = generate_in(page, "txt2img")
        page.screenshot(path=str(ARTIFACTS / "embedded-style.png"), full_page=True, animations="disabled")
    finally:
        toggle_night()
    expect(page.locator("#txt2img_styles")).not_to_contain_text("Night")
    assert infotext.startswith("a red circle on a black background\n"), infotext
    drawn = classify_file(gallery_png(page, "txt2img", tmp_path / "night.png"))
    assert (drawn.colour, drawn.shape, drawn.background) == ("red", "circle", "black"), drawn


def test_tiling_box_makes_the_edges_wrap_around(page, tmp_path):
    """The red circle at the left edge runs on at the right edge: the left and right columns match."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large red circle on the left on a white background")
    set_number(page, "txt2img_seed", 1)
    page.locator("#txt2img_tiling input").check()
    try:
        assert "Tiling: True" in generate_in(page, "txt2img")
    finally:
        page.locator("#txt2img_tiling input").uncheck()
    with Image.open(gallery_png(page, "txt2img", tmp_path / "tiled.png")) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert np.abs(pixels[:, 0] - pixels[:, -1]).mean() < 2  # 11.5 without tiling (tests/test_embedded_model.py)
    page.screenshot(path=str(ARTIFACTS / "embedded-tiling.png"), full_page=True, animations="disabled")


def test_tiling_one_axis_wraps_that_axis_only(page, tmp_path):
    """Tiling axes "Y only": the circle at the left edge does not run on at the right edge; the infotext has the
    Asymmetric tiling extension's keys."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large red circle on the left on a white background")
    set_number(page, "txt2img_seed", 1)
    page.locator("#txt2img_tiling input").check()
    pick(page, "txt2img_tiling_axes", "Y only")
    try:
        assert "Tile X: False, Tile Y: True" in generate_in(page, "txt2img")
        page.screenshot(path=str(ARTIFACTS / "embedded-tiling-y.png"), full_page=True, animations="disabled")
    finally:
        page.locator("#txt2img_tiling input").uncheck()
        pick(page, "txt2img_tiling_axes", "both")
    with Image.open(gallery_png(page, "txt2img", tmp_path / "tiled.png")) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert np.abs(pixels[:, 0] - pixels[:, -1]).mean() > 5  # the x axis not wrapped


def test_rescale_cfg_pag_and_ngms_under_cfg_and_the_freeu_panel(page, tmp_path):
    """At CFG 25 seed 0's red burns to orange (tests/test_embedded_model.py); Rescale CFG 0.7, set under the CFG
    slider, keeps it red. Then FreeU, ticked in its panel (version 2, from a tenth of the steps), PAG (attenuated
    and starting later in its panel under CFG), NGMS (on all steps) and Skip Early CFG, set under CFG too, are
    written into the infotext with their values."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large red circle in the center on a white background")
    set_numbers(page, {"txt2img_seed": 0, "txt2img_cfg_scale": 25, "txt2img_rescale_cfg_scale": 0.7})
    try:
        infotext = generate_in(page, "txt2img")
        assert "CFG scale: 25" in infotext and "Rescale CFG: 0.7" in infotext, infotext
        drawn = classify_file(gallery_png(page, "txt2img", tmp_path / "rescaled.png"))
        assert (drawn.colour, drawn.shape) == ("red", "circle"), drawn
        set_numbers(page, {"txt2img_cfg_scale": 7, "txt2img_rescale_cfg_scale": 0, "txt2img_pag_scale": 3,
                           "txt2img_s_min_uncond": 2, "txt2img_skip_early_cond": 0.3})
        page.locator("#txt2img_s_min_uncond_all input").check()
        page.locator("#txt2img_freeu").get_by_text("FreeU", exact=True).click()
        page.locator("#txt2img_freeu_enabled input").check()
        pick(page, "txt2img_freeu_preset", "SD 1.5")  # the factors FreeU's authors give
        expect(page.locator("#txt2img_freeu_b2 input[type=number]")).to_have_value("1.6")
        set_numbers(page, {"txt2img_freeu_b1": 1.2, "txt2img_freeu_b2": 1.4, "txt2img_freeu_start": 0.1})
        page.locator("#txt2img_freeu_version").get_by_label("2", exact=True).check()
        page.locator("#txt2img_pag_schedule").get_by_text("PAG attenuation and steps", exact=True).click()
        set_numbers(page, {"txt2img_pag_attenuation": 10, "txt2img_pag_start": 0.2})
        infotext = generate_in(page, "txt2img")
        assert "PAG scale: 3, PAG attenuation: 10, PAG start: 0.2, FreeU: True, FreeU B1: 1.2, FreeU B2: 1.4, " \
               "FreeU S1: 0.9, FreeU S2: 0.2, FreeU start: 0.1, FreeU end: 1, FreeU version: 2" in infotext, infotext
        assert "Rescale CFG" not in infotext and ", NGMS: 2, NGMS all steps: True, " in infotext, infotext
        assert ", Skip Early CFG: 0.3, " in infotext, infotext
        drawn = classify_file(gallery_png(page, "txt2img", tmp_path / "freeu.png"))
        assert (drawn.colour, drawn.shape, drawn.background) == ("red", "circle", "white"), drawn
        page.screenshot(path=str(ARTIFACTS / "embedded-freeu-rescale.png"), full_page=True, animations="disabled")
    finally:
        if page.locator("#txt2img_freeu_enabled input").is_visible():  # its panel opened
            page.locator("#txt2img_freeu_enabled input").uncheck()
            page.locator("#txt2img_freeu_version").get_by_label("1", exact=True).check()
            set_numbers(page, {"txt2img_freeu_b1": 1.3, "txt2img_freeu_start": 0})
        page.locator("#txt2img_s_min_uncond_all input").uncheck()
        if page.locator("#txt2img_pag_attenuation").is_visible():
            set_numbers(page, {"txt2img_pag_attenuation": 0, "txt2img_pag_start": 0})
        set_numbers(page, {"txt2img_cfg_scale": 7, "txt2img_rescale_cfg_scale": 0, "txt2img_pag_scale": 0,
                           "txt2img_s_min_uncond": 0, "txt2img_skip_early_cond": 0})


def test_sag_under_cfg_and_its_blur_panel_keep_what_is_drawn(page, tmp_path):
    """SAG's scale, set under CFG, and its blur sigma and mask threshold in the panel beside PAG's: the blue square
    stays a blue square in the centre (tests/test_embedded_model.py), and the extension's keys are in the infotext;
    with the step cache too it is refused with a message."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large blue square in the center on a white background")
    page.locator("#txt2img_sag_options").get_by_text("SAG blur and mask", exact=True).click()
    set_numbers(page, {"txt2img_seed": 0, "txt2img_sag_scale": 0.75, "txt2img_sag_blur_sigma": 2,
                       "txt2img_sag_threshold": 0.8})
    try:
        infotext = generate_in(page, "txt2img")
        assert "SAG Guidance Scale: 0.75, SAG Blur Sigma: 2, SAG Mask Threshold: 0.8" in infotext, infotext
        drawn = classify_file(gallery_png(page, "txt2img", tmp_path / "sag.png"))
        assert (drawn.colour, drawn.shape, drawn.position, drawn.background) == ("blue", "square", "center",
                                                                                "white"), drawn
        page.locator("#txt2img_sag_scale").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "embedded-sag.png"), animations="disabled")
        set_number(page, "txt2img_step_cache", 2)
        page.locator("#txt2img_generate").click()
        toast = page.get_by_role("status").filter(has_text="would be Self-Attention Guidance's second call")
        expect(toast).to_be_visible()
        toast.get_by_role("button", name="Close", exact=True).click()
    finally:
        set_numbers(page, {"txt2img_sag_scale": 0, "txt2img_step_cache": 0, "txt2img_sag_blur_sigma": 1,
                           "txt2img_sag_threshold": 1})


def test_deep_shrink_panel_draws_once_what_twice_the_models_size_repeats(page, tmp_path):
    """At 128 x 128 the model repeats the circle (tests/test_embedded_model.py); Deep Shrink, ticked in its panel
    with its end percent at 0.7, draws one in the centre, and Forge's keys are in the infotext; with SAG too it is
    refused with a message."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large red circle in the center on a white background")
    set_numbers(page, {"txt2img_seed": 1, "txt2img_width": 128, "txt2img_height": 128})
    page.locator("#txt2img_deep_shrink_panel").get_by_text("Kohya HRFix (Deep Shrink)", exact=True).click()
    page.locator("#txt2img_deep_shrink input").check()
    set_number(page, "txt2img_deep_shrink_end", 0.7)
    try:
        infotext = generate_in(page, "txt2img")
        assert "kohya_hrfix_enabled: True, kohya_hrfix_block_number: 3, kohya_hrfix_downscale_factor: 2, " \
               "kohya_hrfix_start_percent: 0, kohya_hrfix_end_percent: 0.7" in infotext, infotext
        with Image.open(gallery_png(page, "txt2img", tmp_path / "shrunk.png")) as picture:
            drawn = classify(picture)
            assert patches(picture, "red") == 1 and (drawn.colour, drawn.position) == ("red", "center"), drawn
        page.locator("#txt2img_deep_shrink_panel").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "embedded-deep-shrink.png"), animations="disabled")
        set_number(page, "txt2img_sag_scale", 0.5)
        page.locator("#txt2img_generate").click()
        toast = page.get_by_role("status").filter(has_text="Self-Attention Guidance reads a map the size of")
        expect(toast).to_be_visible()
        toast.get_by_role("button", name="Close", exact=True).click()
    finally:
        page.locator("#txt2img_deep_shrink input").uncheck()
        set_numbers(page, {"txt2img_sag_scale": 0, "txt2img_deep_shrink_end": 0.35, "txt2img_width": 64,
                           "txt2img_height": 64})


def test_dynamic_thresholding_panel_keeps_a_burning_cfg_scales_red(page, tmp_path):
    """At CFG 25 seed 0's red burns (tests/test_embedded_model.py); Dynamic Thresholding, ticked in its panel at the
    mimic scale 7, keeps it red, and its keys are in the infotext; a CFG schedule set in its advanced options too."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large red circle in the center on a white background")
    set_numbers(page, {"txt2img_seed": 0, "txt2img_cfg_scale": 25})
    page.locator("#txt2img_dynthres").get_by_text("Dynamic Thresholding (CFG Scale Fix)", exact=True).click()
    page.locator("#txt2img_dynthres_enabled input").check()
    try:
        infotext = generate_in(page, "txt2img")
        assert "CFG scale: 25" in infotext and "Dynamic thresholding enabled: True, Mimic scale: 7, " in infotext, \
            infotext
        drawn = classify_file(gallery_png(page, "txt2img", tmp_path / "thresholded.png"))
        assert (drawn.colour, drawn.shape) == ("red", "circle"), drawn
        page.locator("#txt2img_dynthres_advanced").get_by_text("Advanced Options", exact=True).click()
        pick(page, "txt2img_dt_cfg_mode", "Linear Down")  # the CFG scale falls from 25 to its minimum
        set_number(page, "txt2img_dt_cfg_scale_min", 7)
        infotext = generate_in(page, "txt2img")
        assert "CFG mode: Linear Down, CFG scale minimum: 7" in infotext, infotext
        page.locator("#txt2img_dynthres").screenshot(path=str(ARTIFACTS / "embedded-dynamic-thresholding.png"))
    finally:
        page.locator("#txt2img_dynthres_enabled input").uncheck()
        if page.locator("#txt2img_dt_cfg_mode").is_visible():
            pick(page, "txt2img_dt_cfg_mode", "Constant")
            set_number(page, "txt2img_dt_cfg_scale_min", 0)
        set_number(page, "txt2img_cfg_scale", 7)


def test_tiled_diffusion_panel_with_regions_keeps_each_half_its_background(page, tmp_path):
    """Tiled Diffusion, ticked in its panel, makes a 256 x 64 picture in three tiles of 16 latents, with Regional
    Prompter's two halves: the left red, the right blue (tests/test_embedded_model.py). Tiling with it is refused
    with a message."""
    from training.classify import nearest_labels
    from training.shapes import COLOURS

    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill(" BREAK ".join(
        f"a small white circle in the center on a {colour} background" for colour in ("red", "blue")))
    page.locator("#txt2img_regional_prompter").get_by_text("Regional Prompter", exact=True).click()
    page.locator("#txt2img_rp_active input").check()
    page.locator("#txt2img_tiled_diffusion").get_by_text("Tiled Diffusion", exact=True).click()
    page.locator("#txt2img_td_enable input").check()
    pick(page, "txt2img_td_method", "Mixture of Diffusers")
    set_numbers(page, {"txt2img_td_tile_width": 16, "txt2img_td_tile_height": 16, "txt2img_td_overlap": 8,
                       "txt2img_seed": 0, "txt2img_width": 256})
    pick(page, "txt2img_sampler", "Euler")
    try:
        infotext = generate_in(page, "txt2img")
        page.locator("#txt2img_tiled_diffusion").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "embedded-tiled-diffusion.png"), full_page=True, animations="disabled")
        assert ('Tiled Diffusion: {"Method": "Mixture of Diffusers", "Tile tile width": 16, "Tile tile height": 16, '
                '"Tile Overlap": 8, "Tile batch size": 4}') in infotext, infotext
        with Image.open(gallery_png(page, "txt2img", tmp_path / "tiled.png")) as image:
            assert image.size == (256, 64)
            halves = np.split(np.asarray(image.convert("RGB"), dtype=float), 2, axis=1)
        labels = [nearest_labels(half.reshape(-1, 3)) for half in halves]
        shares = [[np.mean(found == list(COLOURS).index(colour)) for colour in ("red", "blue")] for found in labels]
        assert shares[0][0] > shares[0][1] and shares[1][1] > shares[1][0], shares
        page.locator("#txt2img_tiling input").check()
        page.locator("#txt2img_generate").click()
        toast = page.get_by_role("status").filter(has_text="Tiling wraps the picture's edges around")
        expect(toast).to_be_visible()
        toast.get_by_role("button", name="Close", exact=True).click()
    finally:
        page.locator("#txt2img_tiling input").uncheck()
        page.locator("#txt2img_td_enable input").uncheck()
        page.locator("#txt2img_rp_active input").uncheck()
        set_number(page, "txt2img_width", 64)
        pick(page, "txt2img_sampler", "Euler a")


def test_sampler_parameters_panel_eta_0_makes_euler_a_paint_eulers_picture(page, tmp_path):
    """A1111's "Eta for k-diffusion samplers", set in the tab's Sampler parameters panel: at 0 Euler a draws no fresh
    noise and paints what Euler paints (its infotext saying so); Euler's has no eta (it reads none), and takes the
    panel's zero terminal SNR noise schedule."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a red circle on a white background")
    page.locator("#txt2img_sampler_parameters").get_by_text("Sampler parameters", exact=True).click()
    set_numbers(page, {"txt2img_seed": 11, "txt2img_eta_ancestral": 0})
    try:
        infotext = generate_in(page, "txt2img")
        assert "Sampler: Euler a," in infotext and ", Eta: 0," in infotext, infotext
        quiet = gallery_png(page, "txt2img", tmp_path / "eta0.png")
        page.screenshot(path=str(ARTIFACTS / "embedded-sampler-parameters.png"), full_page=True,
                        animations="disabled")
        pick(page, "txt2img_sampler", "Euler")
        infotext = generate_in(page, "txt2img")
        assert "Sampler: Euler," in infotext and "Eta" not in infotext, infotext
        euler = gallery_png(page, "txt2img", tmp_path / "euler.png")
        page.locator("#txt2img_noise_schedule").get_by_text("Zero Terminal SNR", exact=True).click()
        assert ", Noise Schedule: Zero Terminal SNR," in generate_in(page, "txt2img")
    finally:
        page.locator("#txt2img_noise_schedule").get_by_text("Default", exact=True).click()
        set_numbers(page, {"txt2img_eta_ancestral": 1})
        pick(page, "txt2img_sampler", "Euler a")
    with Image.open(quiet) as a, Image.open(euler) as b:
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    drawn = classify_file(quiet)
    assert (drawn.colour, drawn.shape) == ("red", "circle"), drawn


def test_ensd_in_the_sampler_parameters_panel_moves_euler_as_noise_and_is_read_back(page, tmp_path):
    """A1111's Eta noise seed delta, set in the tab's Sampler parameters panel: Euler a's picture is another one (still
    the prompt's) and its infotext says ENSD; the shown picture's parameters (↙️ with the prompt box empty) put it
    back into the panel."""
    open_tab(page, "txt2img")
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("a red circle on a white background")
    delta = page.locator("#txt2img_eta_noise_seed_delta input[type=number]")
    if not delta.is_visible():  # the panel: open when an earlier test left it so
        page.locator("#txt2img_sampler_parameters").get_by_text("Sampler parameters", exact=True).click()
    set_numbers(page, {"txt2img_seed": 11})
    try:
        assert "ENSD" not in generate_in(page, "txt2img")
        plain = gallery_png(page, "txt2img", tmp_path / "plain.png")
        set_numbers(page, {"txt2img_eta_noise_seed_delta": 31337})
        infotext = generate_in(page, "txt2img")
        assert "Sampler: Euler a," in infotext and ", ENSD: 31337," in infotext, infotext
        moved = gallery_png(page, "txt2img", tmp_path / "moved.png")
        page.screenshot(path=str(ARTIFACTS / "embedded-ensd.png"), full_page=True, animations="disabled")
        set_numbers(page, {"txt2img_eta_noise_seed_delta": 0})
        prompt.fill("")
        page.locator("#txt2img_read_parameters").click()
        expect(delta).to_have_value("31337")
        expect(prompt).to_have_value("a red circle on a white background")
    finally:
        set_numbers(page, {"txt2img_eta_noise_seed_delta": 0})
    with Image.open(plain) as a, Image.open(moved) as b:
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() > 16
    drawn = classify_file(moved)
    assert (drawn.colour, drawn.shape) == ("red", "circle"), drawn


def test_prompt_editing_typed_in_the_prompt_box(page, tmp_path):
    """``[on the left:on the right:0.1]``: the place follows the text of the first 2 of 20 steps."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large red circle [on the left:on the right:0.1] on a white background")
    set_number(page, "txt2img_seed", 1)
    infotext = generate_in(page, "txt2img")
    assert infotext.startswith("a large red circle [on the left:on the right:0.1] on a white background\n"), infotext
    drawn = classify_file(gallery_png(page, "txt2img", tmp_path / "edited.png"))
    assert (drawn.colour, drawn.position) == ("red", "left"), drawn


def test_composable_parts_typed_in_the_prompt_box(page, tmp_path):
    """A1111's ``AND``: the heavier part's colour wins though it comes second; the infotext keeps the prompt."""
    open_tab(page, "txt2img")
    prompt = "a red circle on a white background:0.3 AND a blue circle on a white background"
    page.locator("#txt2img_prompt textarea").fill(prompt)
    set_number(page, "txt2img_seed", 1)
    infotext = generate_in(page, "txt2img")
    assert infotext.startswith(prompt + "\n"), infotext
    drawn = classify_file(gallery_png(page, "txt2img", tmp_path / "composed.png"))
    assert drawn.colour == "blue", drawn
    page.screenshot(path=str(ARTIFACTS / "composable.png"), full_page=True, animations="disabled")


def test_a_refiner_and_a_hires_checkpoint_picked_in_their_panels(page, tmp_path):
    """easel-shapes-koala, the distilled student, takes over after half the steps (the teacher's place is kept: on
    its own the student misses the centre), then runs hires fix's second pass instead."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large red circle in the center on a white background")
    set_number(page, "txt2img_seed", 0)
    page.locator("#txt2img_refiner").get_by_text("Refiner", exact=True).click()
    hires = page.locator("#txt2img_enable_hr input")
    try:
        pick(page, "txt2img_refiner_checkpoint", "easel-shapes-koala")
        set_number(page, "txt2img_refiner_switch_at", 0.5)
        infotext = generate_in(page, "txt2img")
        assert "Refiner: easel-shapes-koala [" in infotext and "Refiner switch at: 0.5," in infotext, infotext
        drawn = classify_file(gallery_png(page, "txt2img", tmp_path / "refined.png"))
        assert (drawn.colour, drawn.shape, drawn.position, drawn.background) == ("red", "circle", "center", "white"), \
            drawn
        page.screenshot(path=str(ARTIFACTS / "embedded-refiner.png"), full_page=True, animations="disabled")

        pick(page, "txt2img_refiner_checkpoint", "None")
        page.get_by_text("Hires. fix", exact=True).click()
        hires.check()
        pick(page, "txt2img_hr_checkpoint", "easel-shapes-koala")
        infotext = generate_in(page, "txt2img")
        assert "Hires checkpoint: easel-shapes-koala [" in infotext and "Refiner" not in infotext, infotext
        with Image.open(gallery_png(page, "txt2img", tmp_path / "hires.png")) as picture:
            assert picture.size == (128, 128)
            drawn = classify(picture.convert("RGB").resize((64, 64)))
        assert (drawn.colour, drawn.background) == ("red", "white"), drawn
        page.screenshot(path=str(ARTIFACTS / "embedded-hires-checkpoint.png"), full_page=True, animations="disabled")
    finally:
        pick(page, "txt2img_refiner_checkpoint", "None")
        if hires.is_visible():
            pick(page, "txt2img_hr_checkpoint", "Use same checkpoint")
            hires.uncheck()


def test_a_prompt_list_makes_a_picture_per_line(page, tmp_path):
    """Prompts from file or textbox: an uploaded file's lines, each before the tab's prompt, run as jobs of their own,
    a line's options over the tab's (its seed); the lines' pictures are what they say."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("on a white background")
    set_number(page, "txt2img_seed", 3)
    page.locator("#txt2img_prompt_list").get_by_text("Prompts from file or textbox", exact=True).click()
    listed = 'a large red circle in the center\n--prompt "a large blue square in the center" --seed 4\n'
    (tmp_path / "prompts.txt").write_text(listed, encoding="utf-8")
    page.locator("#txt2img_prompt_lines_file input[type=file]").set_input_files(str(tmp_path / "prompts.txt"))
    lines = page.locator("#txt2img_prompt_lines textarea")
    expect(lines).to_have_value(listed)  # the file's text, in the box
    try:
        infotext = generate_in(page, "txt2img")
        pictures = page.locator("#txt2img_gallery img")
        expect(pictures).to_have_count(2)
        page.screenshot(path=str(ARTIFACTS / "embedded-prompt-list.png"), full_page=True, animations="disabled")
        drawn = []
        for index in range(2):
            (tmp_path / f"{index}.png").write_bytes(page.request.get(pictures.nth(index).get_attribute("src")).body())
            drawn.append(classify_file(tmp_path / f"{index}.png"))
        expect(page.locator("#txt2img_gallery")).to_contain_text("Seed 4")  # the second line's own seed
    finally:
        lines.fill("")
    assert infotext.startswith("a large red circle in the center on a white background\n") and "Seed: 3," in infotext
    assert [(d.colour, d.shape, d.background) for d in drawn] == [("red", "circle", "white"),
                                                                  ("blue", "square", "white")], drawn


def test_a_prompt_matrix_makes_a_picture_per_combination_and_their_grid(page, tmp_path):
    """Prompt matrix: "...|on a black background" makes the picture without the part and with it (a black
    background), and a grid of the two first in the gallery, 100 px of margin between them, saved with the first
    picture's parameters. On the page loaded afresh: the gallery of an earlier test may be left showing one picture
    large."""
    page.reload()
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large red circle in the center|on a black background")
    set_number(page, "txt2img_seed", 3)
    page.locator("#txt2img_prompt_matrix_panel").get_by_text("Prompt matrix", exact=True).click()
    switch = page.locator("#txt2img_prompt_matrix input")
    switch.check()
    page.locator("#txt2img_matrix_joiner").get_by_text("space", exact=True).click()
    set_number(page, "txt2img_matrix_margin", 100)
    try:
        infotext = generate_in(page, "txt2img")
        pictures = page.locator("#txt2img_gallery img")
        expect(pictures).to_have_count(3)
        page.screenshot(path=str(ARTIFACTS / "embedded-prompt-matrix.png"), full_page=True, animations="disabled")
        for index, name in enumerate(("grid", "without", "with")):
            (tmp_path / f"{name}.png").write_bytes(page.request.get(pictures.nth(index).get_attribute("src")).body())
    finally:
        switch.uncheck()
        page.locator("#txt2img_matrix_joiner").get_by_text("comma", exact=True).click()
    assert infotext.startswith("a large red circle in the center\n") and "Seed: 3," in infotext, infotext
    pictures = [Image.open(tmp_path / f"{name}.png") for name in ("without", "with")]
    expected = PromptMatrix(margin=100).grid({"prompt": "a large red circle in the center|on a black background"},
                                             pictures)
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == expected.size and grid.width >= 2 * 64 + 100  # two cells, the margin, the labels
    assert classify_file(tmp_path / "with.png").background == "black"


def test_dynamic_prompts_a_wildcard_picked_then_every_combination(page, tmp_path):
    """Dynamic Prompts: a wildcard picked in its panel goes into the prompt; with combinatorial generation the
    template makes a picture per combination of the shipped colours (models/wildcards/colors.txt, in the order of
    their names) and two backgrounds, after their grid, each what its own prompt says."""
    page.reload()
    open_tab(page, "txt2img")
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("a large")
    page.locator("#txt2img_dynamic_prompts").get_by_text("Dynamic Prompts", exact=True).click()
    page.locator("#txt2img_dp_wildcards input").click()
    page.locator("#txt2img_dp_wildcards").get_by_role("option", name="colors", exact=True).click()
    expect(prompt).to_have_value("a large __colors__")
    template = "a large __colors__ circle in the center on a {white|black} background"
    prompt.fill(template)
    set_number(page, "txt2img_seed", 3)
    combinatorial = page.locator("#txt2img_dp_combinatorial input")
    combinatorial.check()
    expect(prompt).to_have_value(template)
    try:
        infotext = generate_in(page, "txt2img")
        assert infotext.startswith("a large blue circle in the center on a white background\n"), infotext
        expect(page.locator("#txt2img_gallery")).to_contain_text("Seed 14")  # the twelfth picture's
        page.locator("#txt2img_dynamic_prompts").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "embedded-dynamic-prompts.png"), full_page=True, animations="disabled")
        drawn = [classify_file(gallery_png(page, "txt2img", tmp_path / f"{seed}.png", f"Seed {seed}"))
                 for seed in range(3, 15)]
    finally:
        combinatorial.uncheck()
    colours = sorted((MODELS / "wildcards" / "colors.txt").read_text().split())  # a wildcard's values, sorted
    assert [(d.colour, d.background) for d in drawn] == [(colour, background) for colour in colours
                                                         for background in ("white", "black")], drawn


def test_loopback_then_sd_upscale_in_img2img(page, tmp_path):
    """Loopback: three loops towards "blue" at a rising strength, their grid and each picture in the gallery, the
    last one blue.
    SD upscale: the red circle twice as large, repainted lightly in 64x64 tiles, still a red circle on white."""
    img2img_with(page, circle_picture(), tmp_path / "circle.png")
    page.locator("#img2img_prompt textarea").fill("a large blue circle in the center on a white background")
    set_number(page, "img2img_denoising_strength", 0.5)
    set_number(page, "img2img_seed", 3)
    with script_on(page, "loopback", "Loopback", {"loops": 3, "final_strength": 0.9}):
        infotext = generate_in(page, "img2img")
        pictures = page.locator("#img2img_gallery img")
        expect(pictures).to_have_count(4)  # the grid of the loops, then each
        page.screenshot(path=str(ARTIFACTS / "embedded-loopback.png"), full_page=True, animations="disabled")
        (tmp_path / "last.png").write_bytes(page.request.get(pictures.nth(3).get_attribute("src")).body())
    assert "Denoising strength: 0.5," in infotext and "Final denoising strength: 0.9" in infotext, infotext
    assert classify_file(tmp_path / "last.png").colour == "blue"

    page.locator("#img2img_prompt textarea").fill("a large red circle in the center on a white background")
    set_number(page, "img2img_denoising_strength", 0.2)
    with script_on(page, "sd_upscale", "SD upscale", {"overlap": 16, "scale": 2}):
        infotext = generate_in(page, "img2img")
        expect(page.locator("#img2img_gallery img")).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "embedded-sd-upscale.png"), full_page=True, animations="disabled")
        upscaled = gallery_png(page, "img2img", tmp_path / "upscaled.png")
    assert "SD upscale overlap: 16, SD upscale upscaler: Lanczos" in infotext, infotext
    with Image.open(upscaled) as picture:
        assert picture.size == (128, 128)
        drawn = classify(picture.convert("RGB").resize((64, 64), Image.LANCZOS))
    assert (drawn.colour, drawn.shape, drawn.position, drawn.background) == ("red", "circle", "center", "white"), drawn
    open_tab(page, "Inpaint")  # Loopback inpaints too; SD upscale is img2img's alone
    expect(page.locator("#inpaint_loopback_panel")).to_be_visible()
    expect(page.locator("#inpaint_sd_upscale_panel")).to_have_count(0)


def test_tiled_diffusions_upscaler_in_img2img(page, tmp_path):
    """Tiled Diffusion's panel in img2img: the red circle upscaled 4x by Lanczos, then repainted lightly in 3 x 3
    tiles: a 256 x 256 red circle on white (tests/test_embedded_model.py), the upscale in its infotext."""
    img2img_with(page, circle_picture(), tmp_path / "circle.png")
    page.locator("#img2img_prompt textarea").fill("a large red circle in the center on a white background")
    page.locator("#img2img_tiled_diffusion").get_by_text("Tiled Diffusion", exact=True).click()
    page.locator("#img2img_td_enable input").check()
    pick(page, "img2img_td_upscaler", "Lanczos")
    set_numbers(page, {"img2img_td_tile_width": 16, "img2img_td_tile_height": 16, "img2img_td_overlap": 8,
                       "img2img_td_scale_factor": 4, "img2img_denoising_strength": 0.3, "img2img_seed": 0})
    try:
        infotext = generate_in(page, "img2img")
        page.locator("#img2img_tiled_diffusion").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "embedded-tiled-upscale.png"), full_page=True, animations="disabled")
        upscaled = gallery_png(page, "img2img", tmp_path / "upscaled.png")
    finally:
        page.locator("#img2img_td_enable input").uncheck()
    assert "Size: 256x256" in infotext and "Tiled Diffusion upscaler: Lanczos, Tiled Diffusion scale factor: 4" in \
        infotext, infotext
    with Image.open(upscaled) as picture:
        assert picture.size == (256, 256)
        drawn = classify(picture.convert("RGB").resize((64, 64), Image.LANCZOS))
    assert (drawn.colour, drawn.shape, drawn.position, drawn.background) == ("red", "circle", "center", "white"), drawn


def test_a_sketch_in_img2img_and_an_inpaint_sketch(page, tmp_path):
    """Sketch: a green blob painted in the top left corner of a white picture (copied from the image above) becomes
    a circle there, though the prompt names no place. Inpaint sketch: a red circle painted over in blue is repainted
    as a blue circle."""
    circle_picture().save(tmp_path / "circle.png")
    img2img_with(page, Image.new("RGB", (64, 64), "white"), tmp_path / "white.png")
    page.locator("#img2img_sketch_panel").get_by_text("Sketch: paint over a picture", exact=True).click()
    page.locator("#img2img_sketch_copy").click()
    expect(page.locator("#img2img_sketch .zoom-number")).to_be_visible()  # the editor holds the picture
    page.wait_for_timeout(1500)  # and has sized its canvas
    paint_on(page, "img2img_sketch", (0, 170, 0), 7, [(12, 12), (18, 12), (18, 18), (12, 18), (15, 15)])
    page.locator("#img2img_prompt textarea").fill("a large circle on a white background")
    set_numbers(page, {"img2img_denoising_strength": 0.55, "img2img_seed": 3})
    generate_in(page, "img2img")
    page.screenshot(path=str(ARTIFACTS / "embedded-sketch.png"), full_page=True, animations="disabled")
    drawn = classify_file(gallery_png(page, "img2img", tmp_path / "sketched.png"))
    assert (drawn.colour, drawn.shape, drawn.position, drawn.background) == ("green", "circle", "top left", "white")

    open_tab(page, "Inpaint")
    page.locator("#inpaint_editor input[type=file]").first.set_input_files(str(tmp_path / "circle.png"))
    expect(page.locator("#inpaint_editor .zoom-number")).to_be_visible()
    page.wait_for_timeout(1500)
    paint_on(page, "inpaint_editor", (0, 0, 255), 8, [(28, 28), (36, 28), (36, 36), (28, 36), (32, 32)])
    page.locator("#inpaint_sketch input").check()
    page.locator("#inpaint_prompt textarea").fill("a large circle on a white background")
    set_numbers(page, {"inpaint_denoising_strength": 0.5, "inpaint_seed": 0})
    try:
        generate_in(page, "inpaint")
    finally:
        page.locator("#inpaint_sketch input").uncheck()
    page.screenshot(path=str(ARTIFACTS / "embedded-inpaint-sketch.png"), full_page=True, animations="disabled")
    drawn = classify_file(gallery_png(page, "inpaint", tmp_path / "inpainted.png"))
    assert (drawn.colour, drawn.shape, drawn.position, drawn.background) == ("blue", "circle", "center", "white")


def test_generate_forever_until_cancelled_or_an_error(page):
    """Right-click Generate: "Generate forever" runs job after job (each with its own random seed) until "Cancel
    generate forever"; an error ends it too."""
    open_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a large red circle in the center on a white background")
    set_number(page, "txt2img_seed", -1)
    info, button = page.locator("#txt2img_info textarea"), page.locator("#txt2img_generate")

    def choose(item: str) -> None:
        button.click(button="right")
        page.locator("#easel_generate_menu").get_by_role("button", name=item, exact=True).click()

    def seeds_seen(count: int) -> set[str]:
        seen, deadline = set(), time.monotonic() + GENERATION_TIMEOUT_MS / 1000
        while len(seen) < count and time.monotonic() < deadline:
            seen.add(info.input_value().split("Seed: ")[-1].split(",")[0])
            page.wait_for_timeout(100)
        return seen - {""}

    choose("Generate forever")
    expect(button).to_have_class(re.compile("easel-forever"))
    assert len(seeds_seen(4)) >= 3  # three jobs at least, one after another, nobody pressing Generate
    page.screenshot(path=str(ARTIFACTS / "embedded-generate-forever.png"), full_page=True, animations="disabled")
    choose("Cancel generate forever")
    expect(button).not_to_have_class(re.compile("easel-forever"))
    running = page.locator("#txt2img_gallery [data-testid=status-tracker]")
    expect(running).to_have_class(re.compile("hide"))  # the job running when cancelled ends
    last = info.input_value()
    page.wait_for_timeout(2000)
    assert info.input_value() == last and "hide" in running.get_attribute("class")  # and no other starts

    page.locator("#txt2img_prompt_list").get_by_text("Prompts from file or textbox", exact=True).click()
    lines = page.locator("#txt2img_prompt_lines textarea")
    for _ in range(3):  # a box in an accordion just opened can take its first value back while it mounts
        lines.fill("--steps many")
        lines.blur()
        page.wait_for_timeout(500)
        if lines.input_value() == "--steps many":
            break
    try:
        choose("Generate forever")
        expect(page.get_by_role("status").filter(has_text="Line 1")).to_be_visible()
        expect(button).not_to_have_class(re.compile("easel-forever"))
    finally:
        lines.fill("")
        if "easel-forever" in (button.get_attribute("class") or ""):
            choose("Cancel generate forever")  # not to leave it running for the next test
    for close in page.get_by_role("status").get_by_role("button", name="Close", exact=True).all():
        close.click()


def img2img_with(page, picture: Image.Image, path: Path) -> None:
    """A fresh page's img2img tab with ``picture`` (saved at ``path``) uploaded as its image."""
    picture.save(path)
    page.reload()
    open_tab(page, "img2img")
    page.locator("#img2img_image input[type=file]").set_input_files(str(path))
    expect(page.locator("#img2img_image img").first).to_be_visible()


def circle_picture() -> Image.Image:
    """A large red circle in the center on white, as the embedded model's training pictures draw it."""
    import random

    from training.shapes import Scene, make_item, render

    return render(Scene("white", make_item("circle", "red", "large", "center", random.Random(0))))


@contextmanager
def script_on(page, name: str, title: str, numbers: dict[str, float]):
    """An img2img script's panel opened, its box ticked and its numbers set; the box unticked after."""
    page.locator(f"#img2img_{name}_panel").get_by_text(title, exact=True).click()
    box = page.locator(f"#img2img_{name} input")
    box.check()
    set_numbers(page, {f"img2img_{name}_{key}": value for key, value in numbers.items()})
    try:
        yield
    finally:
        box.uncheck()


def classify_file(path: Path):
    with Image.open(path) as image:
        return classify(image.convert("RGB"))
