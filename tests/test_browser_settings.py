"""Browser tests of the Settings tab (A1111's): change how pictures are saved and the tabs' clip skip, see a bad
file name pattern refused with a message, generate, find the picture saved as the settings say, and open the page
again to find them kept; search the options; save the tabs' values as their defaults and pick a checkpoint, start
again and find both. Each app runs alone (its own outputs folder and settings files), so no other test sees its
settings."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from browser_support import ARTIFACTS, gallery_png, generate_in, open_page, open_tab, pick, set_number
from pipelines.infotext import read_infotext
from playwright.sync_api import expect


@pytest.fixture(scope="module")
def served(models_dir, serve_app, tmp_path_factory):
    outputs = tmp_path_factory.mktemp("settings-out")
    with serve_app(models_dir, outputs=outputs) as url:
        yield url, outputs


def _text_box(page, key: str):
    return page.locator(f"#setting_{key} input, #setting_{key} textarea").first


def test_settings_change_how_pictures_are_saved_and_are_kept(served):
    url, outputs = served
    with open_page(url) as page:
        open_tab(page, "Settings")
        page.locator("#setting_samples_format").get_by_label("jpg", exact=True).check()
        _text_box(page, "samples_filename_pattern").fill("[seed]-[nope]")
        page.locator("#setting_save_txt input[type=checkbox]").check()
        page.locator("#setting_enable_pnginfo input[type=checkbox]").uncheck()
        open_tab(page, "Stable Diffusion")
        set_number(page, "setting_CLIP_stop_at_last_layers", 2)
        page.locator("#settings_submit").click()
        toast = page.get_by_role("status").filter(has_text="Unknown token [nope] in the file name pattern")
        expect(toast).to_be_visible()
        expect(page.locator("#settings_result")).not_to_contain_text("changed")  # nothing was applied
        toast.get_by_role("button", name="Close", exact=True).click()

        open_tab(page, "Saving images/grids")
        _text_box(page, "samples_filename_pattern").fill("[seed]-[prompt_words]")
        page.locator("#settings_submit").click()
        expect(page.locator("#settings_result")).to_contain_text(
            "5 settings changed: samples_format, samples_filename_pattern, enable_pnginfo, save_txt, "
            "CLIP_stop_at_last_layers.")
        page.screenshot(path=str(ARTIFACTS / "settings.png"), full_page=True)

        open_tab(page, "txt2img")
        expect(page.locator("#txt2img_clip_skip input[type=number]")).to_have_value("2")  # the tab's default too
        page.locator("#txt2img_prompt textarea").fill("a red circle")
        infotext = generate_in(page, "txt2img")
        assert "Clip skip: 2" in infotext
        with Image.open(gallery_png(page, "txt2img", outputs / "gallery.png")) as shown:
            assert "parameters" not in shown.info  # enable_pnginfo off: not in the gallery's picture either
    seed = infotext.split("Seed: ")[1].split(",")[0]
    [picture] = (outputs / "txt2img-images").rglob("*.jpg")
    assert picture.name == f"00000-{seed}-a red circle.jpg"
    assert picture.with_suffix(".txt").read_text() == infotext
    assert read_infotext(Image.open(picture)) is None  # nor in the file's EXIF
    assert json.loads((outputs / "config.json").read_text()) == {
        "samples_format": "jpg", "samples_filename_pattern": "[seed]-[prompt_words]", "save_txt": True,
        "enable_pnginfo": False, "CLIP_stop_at_last_layers": 2}

    with open_page(url) as page:  # a page opened later shows them
        expect(page.locator("#txt2img_clip_skip input[type=number]")).to_have_value("2")
        open_tab(page, "Settings")
        expect(page.locator("#setting_samples_format").get_by_label("jpg", exact=True)).to_be_checked()
        expect(_text_box(page, "samples_filename_pattern")).to_have_value("[seed]-[prompt_words]")


def test_the_search_keeps_the_matching_options_and_their_sections(served):
    """A1111's settings search: what is typed picks the options (by label, description or key) and the sections
    that hold them, the first opened, the others greyed out; nothing found says so; an empty box brings every one
    back."""
    url, _ = served
    with open_page(url) as page:
        open_tab(page, "Settings")

        def section(name: str):
            return page.locator("#settings_sections").get_by_role("tab", name=name, exact=True)

        section("img2img").click()  # a section without a match, left for the first that has one
        search = page.locator("#settings_search textarea, #settings_search input").first
        search.fill("grid")
        expect(page.locator("#settings_search_result")).to_contain_text("8 settings found.")
        expect(section("Saving images/grids")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#setting_grid_format")).to_be_visible()
        expect(page.locator("#setting_samples_format")).to_be_hidden()
        for greyed in ("img2img", "Stable Diffusion", "Defaults"):
            expect(section(greyed)).to_be_disabled()
        page.screenshot(path=str(ARTIFACTS / "settings-search.png"), full_page=True)
        section("Saving to a directory").click()
        expect(page.locator("#setting_grid_save_to_dirs")).to_be_visible()
        expect(page.locator("#setting_save_to_dirs")).to_be_hidden()
        section("Gallery").click()
        expect(page.locator("#setting_return_grid")).to_be_visible()
        search.fill("clip_stop")  # a key
        expect(section("Stable Diffusion")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#setting_CLIP_stop_at_last_layers")).to_be_visible()
        search.fill("nothing like it")
        expect(page.locator("#settings_search_result")).to_contain_text("No setting holds 'nothing like it'.")
        search.fill("")
        for name in ("img2img", "Defaults", "Saving images/grids"):
            expect(section(name)).to_be_enabled()
        section("Saving images/grids").click()
        expect(page.locator("#setting_samples_format")).to_be_visible()


def test_the_tabs_values_saved_as_defaults_and_the_checkpoint_picked_start_the_next_run(models_dir, serve_app,
                                                                                         tmp_path):
    """A1111's Defaults: the tabs' values now become those a page starts with once Easel starts again; so does the
    checkpoint picked last, when no --default-model names one."""
    with serve_app(models_dir, outputs=tmp_path) as url, open_page(url) as page:
        set_number(page, "txt2img_steps", 7)
        page.locator("#txt2img_prompt textarea").fill("a blue square")
        open_tab(page, "Settings")
        open_tab(page, "Defaults")
        page.locator("#settings_defaults_save").click()
        expect(page.locator("#settings_defaults_result")).to_contain_text(
            "2 defaults changed: txt2img/Prompt, txt2img/Sampling steps. They show after Easel starts again.")
        page.screenshot(path=str(ARTIFACTS / "settings-defaults.png"), full_page=True)
        pick(page, "model_select", "tiny-sdxl")
        config = tmp_path / "config.json"
        for _ in range(100):  # kept by the pick's event, which may end after the picker shows it
            if config.exists():
                break
            page.wait_for_timeout(100)
    assert json.loads((tmp_path / "ui-config.json").read_text()) == {"txt2img/Prompt/value": "a blue square",
                                                                     "txt2img/Sampling steps/value": 7}
    assert json.loads(config.read_text()) == {"sd_model_checkpoint": "tiny-sdxl"}
    with serve_app(models_dir, default_model=None, outputs=tmp_path) as url, open_page(url) as page:
        expect(page.locator("#model_select input")).to_have_value("tiny-sdxl")
        expect(page.locator("#txt2img_steps input[type=number]")).to_have_value("7")
        expect(page.locator("#txt2img_prompt textarea")).to_have_value("a blue square")
        open_tab(page, "img2img")
        expect(page.locator("#img2img_steps input[type=number]")).not_to_have_value("7")  # txt2img's only


_RECORD_PLAYS = """() => {  // a media element's play(), recorded instead of heard
    window.played = [];
    HTMLMediaElement.prototype.play = function () {
        window.played.push([this.id, this.volume, this.src]);
        return Promise.resolve();
    };
}"""


def test_the_notification_sound_plays_at_a_jobs_end_with_its_volume(models_dir, serve_app, tmp_path):
    """A1111's notification.mp3 (beside the settings file) plays when a job ends, at the volume set; off, it does
    not. The settings reach the pages opened after them, as A1111 asks for a reload."""
    sound = b"ID3 not really an mp3"
    (tmp_path / "notification.mp3").write_bytes(sound)
    with serve_app(models_dir, outputs=tmp_path) as url, open_page(url) as page:
        open_tab(page, "Settings")
        open_tab(page, "User interface")
        result = page.locator("#settings_result")
        for _ in range(3):  # under load the box's value can reach the app after an immediate click: apply again
            set_number(page, "setting_notification_volume", 40)
            page.wait_for_timeout(300)
            page.locator("#settings_submit").click()
            try:
                expect(result).to_contain_text("1 setting changed: notification_volume.", timeout=10_000)
                break
            except AssertionError:
                continue
        expect(result).to_contain_text("1 setting changed: notification_volume.")
        page.screenshot(path=str(ARTIFACTS / "settings-sound.png"), full_page=True)
        page.reload()
        page.evaluate(_RECORD_PLAYS)
        page.locator("#txt2img_prompt textarea").fill("a red circle")
        generate_in(page, "txt2img")
        page.wait_for_function("() => window.played.length === 1")
        [(element, volume, src)] = page.evaluate("() => window.played")
        assert element == "easel_notification_sound" and volume == 0.4 and src.endswith("notification.mp3")
        assert page.request.get(src).body() == sound  # the file is served
        open_tab(page, "Settings")
        open_tab(page, "User interface")
        page.locator("#setting_notification_audio input[type=checkbox]").uncheck()
        page.locator("#settings_submit").click()
        expect(page.locator("#settings_result")).to_contain_text("notification_audio")
        page.reload()
        page.evaluate(_RECORD_PLAYS)
        generate_in(page, "txt2img")
        page.wait_for_timeout(500)
        assert page.evaluate("() => window.played") == []
