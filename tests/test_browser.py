"""End-to-end browser tests: drive the real app (tiny random models) in headless Chromium with Playwright.

Screenshots land in tests/artifacts/ (git-ignored) so a person can check what each test saw.
"""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from browser_support import (ARTIFACTS, GENERATION_TIMEOUT_MS, gallery_png, generate_in, open_page, open_tab, pick,
                             set_number, set_numbers, set_text)
from playwright.sync_api import expect

PROMPT = "a red circle on a white background"

# What one test hands to a later one (test 1's PNG for the PNG Info round trip).
_shared: dict[str, Path] = {}


@pytest.fixture(scope="module")
def page(app_url):
    with open_page(app_url) as page:
        yield page


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("browser_png")


def _txt2img_tab(page):
    open_tab(page, "txt2img")


def _set_prompt(page, prompt: str) -> None:
    page.locator("#txt2img_prompt textarea").fill(prompt)


def test_txt2img_generates_an_image(page, png_dir):
    _txt2img_tab(page)
    _set_prompt(page, PROMPT)
    set_number(page, "txt2img_seed", 42)

    infotext = generate_in(page, "txt2img")

    assert PROMPT in infotext
    assert "Seed: 42" in infotext
    assert "Model: tiny-sd" in infotext
    _shared["png"] = gallery_png(page, "txt2img", png_dir / "txt2img.png")
    page.screenshot(path=str(ARTIFACTS / "txt2img.png"), full_page=True, animations="disabled")


def test_bad_input_shows_a_message(page):
    _txt2img_tab(page)
    _set_prompt(page, PROMPT)
    set_number(page, "txt2img_seed", 99999999999)  # above 2**32 - 1
    info_before = page.locator("#txt2img_info textarea").input_value()

    page.locator("#txt2img_generate").click()

    # gr.Error shows up as a toast (role "status"); find it by its text.
    toast = page.get_by_role("status").filter(has_text="Seed must be between")
    expect(toast).to_be_visible()
    expect(toast).to_contain_text("99999999999")
    # The toast fades in through the Web Animations API: let its own fade finish (not its 10 s countdown bar's)
    # so the screenshot shows it plainly.
    toast.evaluate("e => Promise.all(e.getAnimations().map(a => a.finished))")
    page.screenshot(path=str(ARTIFACTS / "error.png"), full_page=True, animations="disabled")
    assert page.locator("#txt2img_info textarea").input_value() == info_before  # nothing was generated
    toast.get_by_role("button", name="Close", exact=True).click()
    expect(toast).to_have_count(0)

    # The page still works: a random seed generates a fresh image.
    set_number(page, "txt2img_seed", -1)
    infotext = generate_in(page, "txt2img")
    assert PROMPT in infotext
    seed = re.search(r"Seed: (\d+)", infotext)
    assert seed and 0 <= int(seed.group(1)) <= 2**32 - 1, infotext


def test_parameters_pasted_into_the_prompt_fill_the_tab_and_the_prompts_clear(page):
    """A1111's ↙️: a picture's parameters pasted into the prompt box fill the tab; with the box empty, those of the
    picture shown come back; a plain prompt is refused with a message and changes nothing. 🗑️ clears the prompts
    once the user agrees."""
    _txt2img_tab(page)
    prompt, negative = page.locator("#txt2img_prompt textarea"), page.locator("#txt2img_neg_prompt textarea")
    read = page.locator("#txt2img_read_parameters")
    pasted = ("a blue square on a white background\nNegative prompt: blurry\nSteps: 7, Sampler: DPM++ 2M, "
              "Schedule type: Karras, CFG scale: 4.5, Seed: 1234, Size: 64x96, Model: tiny-sd")
    numbers = {f"txt2img_{name}": float(page.locator(f"#txt2img_{name} input[type=number]").input_value())
               for name in ("steps", "cfg_scale", "height")}
    pickers = {name: page.locator(f"#{name} input").input_value() for name in ("txt2img_sampler", "txt2img_scheduler")}
    prompt.fill(pasted)
    read.click()
    expect(prompt).to_have_value("a blue square on a white background")
    expect(negative).to_have_value("blurry")
    for elem_id, value in (("steps", "7"), ("cfg_scale", "4.5"), ("seed", "1234"), ("width", "64"), ("height", "96")):
        expect(page.locator(f"#txt2img_{elem_id} input[type=number]")).to_have_value(value)
    expect(page.locator("#txt2img_sampler input")).to_have_value("DPM++ 2M")
    page.screenshot(path=str(ARTIFACTS / "read_parameters.png"), full_page=True, animations="disabled")
    try:
        set_number(page, "txt2img_steps", 2)
        generate_in(page, "txt2img")
        prompt.fill("")
        negative.fill("")
        set_number(page, "txt2img_seed", -1)
        read.click()  # the prompt box empty: the shown picture's parameters
        expect(prompt).to_have_value("a blue square on a white background")
        expect(page.locator("#txt2img_seed input[type=number]")).to_have_value("1234")
        expect(page.locator("#txt2img_steps input[type=number]")).to_have_value("2")

        prompt.fill("just a prompt")
        read.click()
        toast = page.get_by_role("status").filter(has_text="No generation parameters to read")
        expect(toast).to_be_visible()
        toast.get_by_role("button", name="Close", exact=True).click()
        expect(page.locator("#txt2img_seed input[type=number]")).to_have_value("1234")
        page.once("dialog", lambda dialog: dialog.dismiss())  # A1111's 🗑️ asks first
        page.locator("#txt2img_clear_prompt").click()
        page.wait_for_timeout(500)
        expect(prompt).to_have_value("just a prompt")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#txt2img_clear_prompt").click()
        expect(prompt).to_have_value("")
        expect(negative).to_have_value("")
    finally:  # the tab as it was
        negative.fill("")
        set_numbers(page, {**{k: int(v) if v.is_integer() else v for k, v in numbers.items()}, "txt2img_seed": -1})
        for elem_id, value in pickers.items():
            pick(page, elem_id, value)


def test_token_counters_follow_the_prompts(page):
    """A1111's counters, here in the prompts' labels: tokens out of the room of the 75-token chunks they fill, as
    the prompts are typed; typing goes on undisturbed while they update."""
    _txt2img_tab(page)
    prompt = page.locator("#txt2img_prompt")
    try:
        _set_prompt(page, "(a red:1.2) circle <lora:x:1>")
        expect(prompt).to_contain_text("Prompt (3/75)")
        box = page.locator("#txt2img_prompt textarea")
        box.fill("")
        box.press_sequentially("cat " * 80, delay=5)
        expect(prompt).to_contain_text("Prompt (80/150)")
        expect(box).to_have_value("cat " * 80)
        page.locator("#txt2img_neg_prompt textarea").fill("blurry, dark")
        expect(page.locator("#txt2img_neg_prompt")).to_contain_text("Negative prompt (3/75)")
        page.screenshot(path=str(ARTIFACTS / "token-counters.png"), animations="disabled")
    finally:
        _set_prompt(page, PROMPT)
        page.locator("#txt2img_neg_prompt textarea").fill("")
    expect(prompt).to_contain_text("Prompt (7/75)")


def test_the_style_editor_saves_applies_and_deletes_a_style(page):
    """A1111's style editor: the prompts copied into a new style and saved, the style offered in the list and
    written into the prompts by the apply button (the pick cleared), shown again when picked in the editor, then
    deleted."""
    _txt2img_tab(page)
    _set_prompt(page, "a cat")
    page.locator("#txt2img_neg_prompt textarea").fill("blurry")
    page.locator("#txt2img_styles_editor").get_by_text("Edit styles", exact=True).click()
    name = page.locator("#txt2img_style_name input")
    try:
        name.fill("Night cat")
        name.press("Enter")
        page.locator("#txt2img_style_copy").click()
        expect(page.locator("#txt2img_style_prompt textarea")).to_have_value("a cat")
        page.locator("#txt2img_style_prompt textarea").fill("{prompt} at night")
        page.locator("#txt2img_style_save").click()
        _set_prompt(page, "a dog")
        page.locator("#txt2img_neg_prompt textarea").fill("")
        page.locator("#txt2img_styles input").click()
        page.locator("#txt2img_styles").get_by_role("option", name="Night cat", exact=True).click()
        page.keyboard.press("Escape")
        page.locator("#txt2img_styles_apply").click()
        expect(page.locator("#txt2img_prompt textarea")).to_have_value("a dog at night")
        expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("blurry")
        expect(page.locator("#txt2img_styles")).not_to_contain_text("Night cat")  # the pick is cleared
        page.screenshot(path=str(ARTIFACTS / "styles-editor.png"), full_page=True, animations="disabled")
        page.locator("#txt2img_style_prompt textarea").fill("")
        name.click()
        page.locator("#txt2img_style_name").get_by_role("option", name="Night cat", exact=True).click()
        expect(page.locator("#txt2img_style_prompt textarea")).to_have_value("{prompt} at night")  # picked: shown
    finally:
        page.locator("#txt2img_style_delete").click()
        page.locator("#txt2img_neg_prompt textarea").fill("")
        _set_prompt(page, PROMPT)
    page.locator("#txt2img_styles input").click()
    expect(page.locator("#txt2img_styles").get_by_role("option", name="Night cat", exact=True)).to_have_count(0)
    page.keyboard.press("Escape")


def test_keyboard_shortcuts_weigh_the_prompt_and_generate(page):
    """A1111's shortcuts: Ctrl+Up/Down weigh the word at the caret, a selection, a bracket or a LoRA tag; Ctrl+Enter
    generates with what the box now holds; Alt+Enter presses Skip."""
    _txt2img_tab(page)
    box = page.locator("#txt2img_prompt textarea")

    def press(key: str, text: str | None = None, start: int = 0, end: int | None = None) -> str:
        if text is not None:
            box.fill(text)
            box.evaluate("(box, [start, end]) => box.setSelectionRange(start, end)", [start, start if end is None
                                                                                      else end])
        box.press(key)
        return box.input_value()

    try:
        assert press("Control+ArrowUp", "a red circle", 3) == "a (red:1.1) circle"  # the word at the caret
        assert press("Control+ArrowUp") == "a (red:1.2) circle"  # it stays selected
        assert press("Control+ArrowDown") == "a (red:1.1) circle"
        assert press("Control+ArrowDown") == "a red circle"  # 1.0: the brackets go
        assert press("Control+ArrowUp", "a red circle on white", 2, 12) == "a (red circle:1.1) on white"
        assert press("Control+ArrowUp", "a (red) circle", 4) == "a (red:1.2) circle"  # (red) is 1.1
        assert press("Control+ArrowDown", "a (red) circle", 4) == "a red circle"
        assert press("Control+ArrowDown", "a cat <lora:x:0.8>", 10) == "a cat <lora:x:0.75>"
        assert press("Control+ArrowUp", "a red circle", 3) == "a (red:1.1) circle"
        info = page.locator("#txt2img_info textarea")
        before = info.input_value()
        box.press("Control+Enter")
        expect(info).not_to_have_value(before, timeout=GENERATION_TIMEOUT_MS)
        assert info.input_value().startswith("a (red:1.1) circle\n")  # Gradio got the weighed text
        page.locator("#txt2img_skip").evaluate("(button) => button.addEventListener('click', () => "
                                               "{ window.skipPressed = true; })")
        box.press("Alt+Enter")
        assert page.evaluate("window.skipPressed") is True
    finally:
        _set_prompt(page, PROMPT)


def test_skip_ends_the_current_batch_and_the_next_goes_on(page, png_dir):
    """A1111's Skip: the first of two batches stops where it is, the second runs in full."""
    _txt2img_tab(page)
    _set_prompt(page, PROMPT)
    set_number(page, "txt2img_seed", 21)
    set_number(page, "txt2img_steps", 150)
    set_number(page, "txt2img_batch_count", 2)
    set_numbers(page, {"txt2img_width": 256, "txt2img_height": 256})  # a batch long enough for Skip to land in
    try:
        before = page.locator("#txt2img_info textarea").input_value()
        page.locator("#txt2img_generate").click()
        # the first batch is under way and not near its end: its progress text over the gallery at a step under 100
        # of 150 (a live preview is no sign: an earlier job's can still be arriving, and a Skip before the job
        # starts is lost; one after the first batch's last step would skip the second)
        expect(page.locator("#txt2img_gallery")).to_contain_text(re.compile(r"Batch 1/2, step [1-9][0-9]?/150"),
                                                                 timeout=GENERATION_TIMEOUT_MS)
        page.locator("#txt2img_skip").click()
        expect(page.locator("#txt2img_info textarea")).not_to_have_value(before, timeout=GENERATION_TIMEOUT_MS)
        expect(page.locator("#txt2img_gallery img")).to_have_count(3)  # A1111's grid of the two, then the two
        expect(page.locator("#txt2img_gallery")).to_contain_text("Seed 22")
        skipped = gallery_png(page, "txt2img", png_dir / "skipped.png", "Seed 21")
        set_number(page, "txt2img_batch_count", 1)
        page.locator("#txt2img_generate").click()  # the same infotext as the skipped picture's: wait for one picture
        expect(page.locator("#txt2img_gallery img")).to_have_count(1, timeout=GENERATION_TIMEOUT_MS)
        full = gallery_png(page, "txt2img", png_dir / "full.png")
    finally:
        set_numbers(page, {"txt2img_steps": 20, "txt2img_batch_count": 1, "txt2img_width": 64, "txt2img_height": 64})
    with Image.open(skipped) as cut, Image.open(full) as whole:
        assert cut.tobytes() != whole.tobytes()  # seed 21 stopped early is not seed 21 in full


def test_save_and_zip_keep_every_picture_or_the_picked_one(page, tmp_path):
    """A1111's Save and Zip under the gallery: with none picked, Zip keeps the grid and both pictures in one zip
    offered first; a picked picture is kept alone by Save; each with its parameters."""
    _txt2img_tab(page)
    _set_prompt(page, PROMPT)
    set_numbers(page, {"txt2img_seed": 31, "txt2img_batch_size": 2})
    try:
        generate_in(page, "txt2img")
    finally:
        set_number(page, "txt2img_batch_size", 1)
    links = page.locator("#txt2img_download a")
    page.locator("#txt2img_zip").click()
    expect(links).to_have_count(4)
    page.screenshot(path=str(ARTIFACTS / "save-zip.png"), full_page=True, animations="disabled")
    archive = tmp_path / "kept.zip"
    archive.write_bytes(page.request.get(links.first.get_attribute("href")).body())
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        seeds = []
        for name in names:
            with opened.open(name) as member, Image.open(member) as picture:
                seeds.append(re.search(r"Seed: (\d+),", picture.info["parameters"])[1])
                sizes = picture.size
    assert len(names) == 3 and seeds == ["31", "31", "32"] and sizes == (64, 64)  # the grid, then each picture
    page.locator("#txt2img_gallery button[aria-label='Thumbnail 3 of 3']").click()
    try:
        page.locator("#txt2img_save").click()
        expect(links).to_have_count(1)
        expect(links.first).to_have_attribute("download", re.compile(r"^\d{5}-32\.png$"))
    finally:
        page.locator("#txt2img_gallery button[aria-label='Close']").click()  # the gallery's grid, not its preview


def test_a_job_that_ends_in_the_background_notifies(page):
    """A1111's browser notifications: after 🔔 (the browser grants leave), a job that ends while the page has the
    focus stays quiet; one that ends while it is in the background shows a notification with its pictures' count
    and the first picture (not the grid)."""
    page.context.grant_permissions(["notifications"])
    page.evaluate("""() => {  // the browser's own notifications, recorded as they are made
        const Real = window.Notification;
        window.easelNotes = [];
        window.Notification = class extends Real {
            constructor(title, options) { super(title, options); window.easelNotes.push({title, ...options}); }
        };
    }""")
    bell = page.locator("#request_notifications")
    expect(bell).to_have_attribute("title", re.compile("^Notify me"))
    bell.click()
    expect(bell).to_have_attribute("title", re.compile("^Notifications on"))
    _txt2img_tab(page)
    _set_prompt(page, PROMPT)
    set_numbers(page, {"txt2img_seed": 12, "txt2img_batch_size": 2})
    try:
        generate_in(page, "txt2img")
        page.wait_for_timeout(500)
        assert page.evaluate("() => window.easelNotes.length") == 0  # the page had the focus
        page.evaluate("() => { document.hasFocus = () => false; }")  # the user went to another window
        set_number(page, "txt2img_seed", 13)
        generate_in(page, "txt2img")
        page.wait_for_function("() => window.easelNotes.length === 1")
    finally:
        page.evaluate("() => { delete document.hasFocus; window.Notification = Object.getPrototypeOf(Notification); }")
        set_number(page, "txt2img_batch_size", 1)
    note = page.evaluate("() => window.easelNotes[0]")
    assert note["title"] == "Easel" and note["body"] == "txt2img: 2 pictures"
    first = page.locator("#txt2img_gallery img[alt='Seed 13']").first.get_attribute("src")
    assert note["icon"] == note["image"] and note["icon"].endswith(first.split("/file=")[-1])


def test_variation_seed(page):
    _txt2img_tab(page)
    _set_prompt(page, PROMPT)
    set_number(page, "txt2img_seed", 42)
    page.locator("#txt2img_variation").get_by_text("Variation seed", exact=True).click()
    expect(page.locator("#txt2img_subseed_strength")).to_be_visible()
    set_numbers(page, {"txt2img_subseed": 5, "txt2img_subseed_strength": 0.5, "txt2img_seed_resize_from_w": 32,
                       "txt2img_seed_resize_from_h": 32})
    try:
        infotext = generate_in(page, "txt2img")
        page.screenshot(path=str(ARTIFACTS / "variation.png"), full_page=True, animations="disabled")
    finally:
        set_number(page, "txt2img_subseed_strength", 0)
        for side in "wh":
            set_number(page, f"txt2img_seed_resize_from_{side}", 0)
    assert "Seed: 42, Size: 64x64" in infotext and "Variation seed: 5, Variation seed strength: 0.5," in infotext
    assert "Seed resize from: 32x32," in infotext


def test_regional_prompter_draws_its_regions_and_generates_with_them(page):
    _txt2img_tab(page)
    page.locator("#txt2img_regional_prompter").get_by_text("Regional Prompter", exact=True).click()
    expect(page.locator("#txt2img_rp_ratios")).to_be_visible()
    set_text(page, "txt2img_rp_ratios", "2,x")
    page.locator("#txt2img_rp_visualize").click()
    toast = page.get_by_role("status").filter(has_text="holds 'x', not a number")
    expect(toast).to_be_visible()
    toast.get_by_role("button", name="Close", exact=True).click()
    set_text(page, "txt2img_rp_ratios", "2,1")
    page.locator("#txt2img_rp_visualize").click()
    expect(page.locator("#txt2img_rp_template textarea")).to_have_value("region 0 ADDCOL\nregion 1")
    expect(page.locator("#txt2img_rp_areas img")).to_be_visible()
    _set_prompt(page, "a red circle BREAK a blue square")
    page.locator("#txt2img_rp_active input").check()
    try:
        infotext = generate_in(page, "txt2img")
        page.locator("#txt2img_regional_prompter").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "regional_prompter.png"), full_page=True, animations="disabled")
    finally:
        page.locator("#txt2img_rp_active input").uncheck()
        page.locator("#txt2img_regional_prompter").get_by_text("Regional Prompter", exact=True).click()
    assert ('RP Active: True, RP Divide mode: Matrix, RP Matrix submode: Columns, RP Calc Mode: Latent, '
            'RP Ratios: "2,1"') in infotext


def test_png_info_round_trip(page, png_dir):
    png = _shared.get("png")
    if png is None:  # run on its own: make the image first
        _txt2img_tab(page)
        _set_prompt(page, PROMPT)
        set_number(page, "txt2img_seed", 42)
        generate_in(page, "txt2img")
        png = gallery_png(page, "txt2img", png_dir / "txt2img.png")

    # Clear txt2img so the round trip has to restore the values.
    _txt2img_tab(page)
    _set_prompt(page, "")
    set_number(page, "txt2img_seed", -1)

    open_tab(page, "PNG Info")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(png))
    parameters = page.locator("#pnginfo_text textarea")
    expect(parameters).to_have_value(re.compile(r"Seed: 42\b"))
    assert PROMPT in parameters.input_value()
    page.screenshot(path=str(ARTIFACTS / "png_info.png"), full_page=True, animations="disabled")

    page.locator("#pnginfo_send_to_txt2img").click()

    expect(page.get_by_role("tab", name="txt2img", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value(PROMPT)
    expect(page.locator("#txt2img_seed input[type=number]")).to_have_value("42")
    page.screenshot(path=str(ARTIFACTS / "png_info_sent.png"), full_page=True, animations="disabled")

    # The picture and its parameters to img2img, as A1111's PNG Info sends them; the picture alone to Extras.
    open_tab(page, "PNG Info")
    page.locator("#pnginfo_send_to_img2img").click()
    expect(page.get_by_role("tab", name="img2img", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#img2img_prompt textarea")).to_have_value(PROMPT)
    expect(page.locator("#img2img_seed input[type=number]")).to_have_value("42")
    expect(page.locator("#img2img_image img").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "png_info_to_img2img.png"), full_page=True, animations="disabled")
    set_number(page, "img2img_seed", -1)
    open_tab(page, "PNG Info")
    page.locator("#pnginfo_send_to_extras").click()
    expect(page.get_by_role("tab", name="Extras", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#extras_image img").first).to_be_visible()


def test_xyz_plot_as_a_txt2img_script(page, tmp_path):
    """A1111's X/Y/Z plot in txt2img, its box ticked: steps 1 and 2 across make one labelled grid in the gallery,
    with the plot's parameters; unticked, Generate makes a picture again."""
    _txt2img_tab(page)
    _set_prompt(page, "a red circle for the plot")
    page.locator("#txt2img_xyz_panel").get_by_text("X/Y/Z plot").first.click()
    set_text(page, "txt2img_xyz_x_values", "1, 2")
    page.locator("#txt2img_xyz input").check()
    infotext = generate_in(page, "txt2img")
    assert infotext.startswith("a red circle for the plot\nSteps: 1,")  # the first cell's, then the plot's
    assert infotext.endswith(', Script: X/Y/Z plot, X Type: Steps, X Values: "1, 2"')
    expect(page.locator("#txt2img_gallery img")).to_have_count(1)
    expect(page.locator("#txt2img_gallery img[alt='Grid']")).to_have_count(1)
    with Image.open(gallery_png(page, "txt2img", tmp_path / "grid.png")) as grid:
        assert grid.width == 2 * 64 and grid.height > 64  # two cells across, their labels over them
        assert grid.info["parameters"] == infotext  # the grid's picture carries them, as A1111's
    page.screenshot(path=str(ARTIFACTS / "txt2img_xyz.png"), full_page=True, animations="disabled")
    page.locator("#txt2img_xyz input").uncheck()
    assert "Script" not in generate_in(page, "txt2img")


def test_image_browser_finds_a_saved_picture_and_sends_it(page):
    """The Image Browser lists what was saved, finds a picture by words of its prompt, shows it with its parameters
    and sends them to txt2img."""
    prompt = "a green triangle for the browser"
    _txt2img_tab(page)
    _set_prompt(page, prompt)
    set_number(page, "txt2img_seed", 77)
    generate_in(page, "txt2img")
    _set_prompt(page, "")
    set_number(page, "txt2img_seed", -1)

    open_tab(page, "Image Browser")  # opening it lists the pictures again
    thumbnails = page.locator("#browser_gallery .thumbnail-item")
    where = page.locator("#browser_where")
    expect(where).to_contain_text(re.compile(r"Page 1 of \d+: pictures 1-\d+ of \d+, newest first\."))
    page.locator("#browser_search textarea").fill("GREEN triangle")
    page.locator("#browser_search textarea").press("Enter")
    expect(where).to_contain_text("Page 1 of 1: pictures 1-1 of 1, newest first.")
    expect(thumbnails).to_have_count(1)
    thumbnails.first.click()
    expect(page.locator("#browser_text textarea")).to_have_value(re.compile(r"Seed: 77\b"))
    assert prompt in page.locator("#browser_text textarea").input_value()
    expect(page.locator("#browser_file textarea")).to_have_value(re.compile(r"^txt2img-images/[\d-]+/\d{5}-77\.png$"))
    expect(page.locator("#browser_image img").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "image_browser.png"), full_page=True, animations="disabled")

    page.locator("#browser_send_to_txt2img").click()
    expect(page.get_by_role("tab", name="txt2img", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value(prompt)
    expect(page.locator("#txt2img_seed input[type=number]")).to_have_value("77")
    set_number(page, "txt2img_seed", -1)

    open_tab(page, "Image Browser")
    page.locator("#browser_search textarea").fill("xyzzy")
    page.locator("#browser_search textarea").press("Enter")
    expect(where).to_contain_text("No picture matches these words.")
    expect(thumbnails).to_have_count(0)

    # Delete, asked again first: "Keep it" keeps it, "Delete it" removes it from the disk and the listing
    page.locator("#browser_search textarea").fill("GREEN triangle")
    page.locator("#browser_search textarea").press("Enter")
    expect(thumbnails).to_have_count(1)
    thumbnails.first.click()
    expect(page.locator("#browser_file textarea")).to_have_value(re.compile(r"-77\.png$"))
    page.locator("#browser_delete").click()
    question = page.locator("#browser_delete_question")
    expect(question).to_contain_text(re.compile(r"Delete txt2img-images/[\d-]+/\d{5}-77\.png \(and its \.txt\)\?"))
    page.locator("#browser_delete_cancel").click()
    expect(question).to_be_hidden()
    page.locator("#browser_refresh").click()
    expect(thumbnails).to_have_count(1)
    page.locator("#browser_delete").click()
    page.screenshot(path=str(ARTIFACTS / "image_browser_delete.png"), full_page=True, animations="disabled")
    page.locator("#browser_delete_confirm").click()
    expect(where).to_contain_text("No picture matches these words.")
    expect(page.locator("#browser_file textarea")).to_have_value("")
    expect(question).to_be_hidden()


def _png(png_dir) -> Path:
    return _shared.get("png") or _make_gradient(png_dir / "gradient.png")


def _make_gradient(path: Path) -> Path:
    Image.linear_gradient("L").resize((64, 64)).convert("RGB").save(path)
    return path


def test_img2img_upload_and_send_to(page, png_dir):
    open_tab(page, "img2img")
    page.locator("#img2img_image input[type=file]").set_input_files(str(_png(png_dir)))
    expect(page.locator("#img2img_image img").first).to_be_visible()
    page.locator("#img2img_prompt textarea").fill("a blue square")
    infotext = generate_in(page, "img2img")
    assert infotext.startswith("a blue square") and "Denoising strength: 0.75" in infotext
    page.screenshot(path=str(ARTIFACTS / "img2img.png"), full_page=True, animations="disabled")

    # Its parameters back to txt2img.
    page.locator("#img2img_send_to_txt2img").click()
    expect(page.get_by_role("tab", name="txt2img", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a blue square")

    # From txt2img's gallery to img2img with one click.
    _txt2img_tab(page)
    if not page.locator("#txt2img_gallery img").count():
        generate_in(page, "txt2img")
    page.locator("#txt2img_send_to_img2img").click()
    expect(page.get_by_role("tab", name="img2img", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#img2img_image img").first).to_be_visible()


def test_img2img_variation_seed_noise_multiplier_then_send_to_extras(page, png_dir, tmp_path):
    """img2img's Variation seed panel, Noise multiplier, Extra noise and Color correction reach the infotext; "Send
    to extras" takes the picture, exactly and with its parameters, to Extras, which upscales it."""
    page.reload()  # a "Send to" of an earlier test can still switch the page's tab back under load
    open_tab(page, "img2img")
    page.locator("#img2img_image input[type=file]").set_input_files(str(_make_gradient(png_dir / "variation.png")))
    expect(page.locator("#img2img_image img").first).to_be_visible()
    page.locator("#img2img_prompt textarea").fill("a green square")
    page.locator("#img2img_variation").get_by_text("Variation seed", exact=True).click()
    set_numbers(page, {"img2img_subseed": 5, "img2img_subseed_strength": 0.5, "img2img_noise_multiplier": 0.8,
                       "img2img_extra_noise": 0.2})
    correction = page.locator("#img2img_color_correction input")
    correction.check()
    try:
        infotext = generate_in(page, "img2img")
    finally:
        correction.uncheck()
        set_numbers(page, {"img2img_extra_noise": 0})
    assert "Variation seed: 5, Variation seed strength: 0.5," in infotext and "Noise multiplier: 0.8," in infotext
    assert "Extra noise: 0.2," in infotext
    assert "Color correction: True," in infotext

    made = gallery_png(page, "img2img", tmp_path / "made.png")
    page.locator("#img2img_send_to_extras").click()
    expect(page.get_by_role("tab", name="Extras", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#extras_image img").first).to_be_visible()
    sent = tmp_path / "sent.png"
    sent.write_bytes(page.request.get(page.locator("#extras_image img").first.get_attribute("src")).body())
    with Image.open(made) as before, Image.open(sent) as after:  # sent as PNG: Gradio's default WebP is lossy
        assert after.format == "PNG" and after.tobytes() == before.convert("RGB").tobytes()
    pick(page, "extras_upscaler_1", "Lanczos")
    page.locator("#extras_generate").click()
    expect(page.locator("#extras_info textarea")).to_have_value("Postprocess upscale by: 2, Postprocess upscaler: "
                                                                "Lanczos", timeout=GENERATION_TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "send-to-extras.png"), full_page=True, animations="disabled")
    src = page.locator("#extras_result img").first.get_attribute("src")
    (tmp_path / "result.png").write_bytes(page.request.get(src).body())
    with Image.open(tmp_path / "result.png") as result:
        assert result.size == (128, 128)
        assert result.info["parameters"].startswith("a green square\n") and "Noise multiplier: 0.8" in \
            result.info["parameters"]


def test_inpaint_with_a_mask_drawn_by_mouse(page, png_dir):
    open_tab(page, "Inpaint")
    prompt = page.locator("#inpaint_prompt textarea")
    info = page.locator("#inpaint_info textarea")
    error = page.get_by_role("status").filter(has_text="Error")
    for _ in range(3):  # on a loaded machine the editor may not have taken the image or sized its canvas yet
        page.locator("#inpaint_editor input[type=file]").first.set_input_files(str(_png(png_dir)))
        canvas = page.locator("#inpaint_editor canvas").first
        expect(canvas).to_be_visible()
        page.wait_for_timeout(1500)
        box = canvas.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx - 40, cy)
        page.mouse.down()
        for step in range(9):
            page.mouse.move(cx - 40 + step * 10, cy + (step % 2) * 8, steps=3)
        page.mouse.up()
        prompt.fill("a blue square")
        expect(prompt).to_have_value("a blue square")
        page.locator("#inpaint_generate").click()
        deadline = time.monotonic() + GENERATION_TIMEOUT_MS / 1000
        while time.monotonic() < deadline and not info.input_value() and not error.count():
            page.wait_for_timeout(250)  # the result, or a message saying what was missing
        if info.input_value():
            break
        for close in error.get_by_role("button", name="Close", exact=True).all():
            close.click()
    expect(page.locator("#inpaint_gallery img").first).to_be_visible()
    infotext = info.input_value()
    assert infotext.startswith("a blue square") and "Mask blur: 4" in infotext and "Masked content: original" in infotext
    page.screenshot(path=str(ARTIFACTS / "inpaint.png"), full_page=True, animations="disabled")

    # A1111's soft inpainting, in its accordion: on, with a schedule bias of 2, and read back by ↙️ from the gallery
    page.locator("#soft_inpainting").get_by_text("Soft inpainting").first.click()
    page.locator("#soft_inpainting_enabled input").check()
    set_number(page, "soft_inpainting_schedule_bias", 2)
    infotext = generate_in(page, "inpaint")
    assert "Soft inpainting enabled: True, Soft inpainting schedule bias: 2, Soft inpainting preservation " \
           "strength: 0.5," in infotext
    page.locator("#soft_inpainting").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "inpaint_soft.png"), full_page=True, animations="disabled")
    page.locator("#soft_inpainting_enabled input").uncheck()
    set_number(page, "soft_inpainting_schedule_bias", 1)
    prompt.fill("")
    page.locator("#inpaint_read_parameters").click()
    expect(page.locator("#soft_inpainting_schedule_bias input[type=number]")).to_have_value("2")
    expect(page.locator("#soft_inpainting_enabled input")).to_be_checked()


def test_models_tab(page):
    open_tab(page, "Models")
    choice = page.locator("#models_choice input")
    choice.fill("tiny-sdxl")
    choice.press("Enter")
    page.locator("#models_load").click()
    expect(page.locator("#models_table")).to_contain_text("tiny-sdxl", timeout=GENERATION_TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "models.png"), full_page=True, animations="disabled")
    page.locator("#models_unload").click()
    expect(page.locator("#models_table")).not_to_contain_text("tiny-sdxl")


def test_controlnet_unit_preview_and_generate(page, png_dir):
    _txt2img_tab(page)
    page.locator("#txt2img_controlnet").get_by_text("ControlNet", exact=True).first.click()
    unit = "#txt2img_cn0"
    page.locator(f"{unit}_image input[type=file]").set_input_files(str(_make_circle(png_dir / "circle.png")))
    expect(page.locator(f"{unit}_image img").first).to_be_visible()
    expect(page.locator(f"{unit}_enabled input")).to_be_checked()  # a picture enables its unit
    model = page.locator(f"{unit}_model input")
    model.fill("tiny-sd-control")
    model.press("Enter")
    expect(page.locator(f"{unit}_module input")).to_have_value("canny")
    page.locator(f"{unit}_run_preview").click()
    expect(page.locator(f"{unit}_preview img").first).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    edges = page.request.get(page.locator(f"{unit}_preview img").first.get_attribute("src")).body()
    (png_dir / "edges.png").write_bytes(edges)
    with Image.open(png_dir / "edges.png") as shown:  # exact, as a PNG: a lossy WebP blurs an edge map's 0s and 255s
        assert shown.format == "PNG" and set(np.unique(np.asarray(shown.convert("L")))) == {0, 255}
    _set_prompt(page, PROMPT)
    set_number(page, "txt2img_seed", 7)
    infotext = generate_in(page, "txt2img")
    assert 'ControlNet 0: "Module: canny, Model: tiny-sd-control [' in infotext
    page.locator("#txt2img_controlnet").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "controlnet.png"), full_page=True, animations="disabled")

    # A gallery picture sent to ControlNet lands in the first unit.
    picture = page.locator(f"{unit}_image img").first
    uploaded = picture.get_attribute("src")
    page.locator("#txt2img_send_to_controlnet").click()
    expect(picture).not_to_have_attribute("src", uploaded)
    page.locator(f"{unit}_enabled input").uncheck()  # leave the page as the other tests expect it


def test_an_ip_adapter_unit_previews_and_generates(page, png_dir):
    """IP-Adapter in a ControlNet unit (its second): the module shows the square its CLIP encoder reads, and the
    picture made names the adapter in its infotext; with a black effective region mask the adapter acts nowhere (the
    picture without the unit)."""
    _txt2img_tab(page)
    panel = page.locator("#txt2img_controlnet")
    tab = panel.get_by_role("tab", name="ControlNet Unit 1")
    if not tab.is_visible():  # the accordion: open when an earlier test left it so
        panel.get_by_text("ControlNet", exact=True).first.click()
    tab.click()
    unit = "#txt2img_cn1"
    wide = Image.new("RGB", (128, 64), "white")
    ImageDraw.Draw(wide).ellipse((40, 8, 88, 56), fill="blue")
    wide.save(png_dir / "wide.png")
    page.locator(f"{unit}_image input[type=file]").set_input_files(str(png_dir / "wide.png"))
    expect(page.locator(f"{unit}_enabled input")).to_be_checked()
    pick(page, f"{unit[1:]}_module", "ip-adapter_clip_h")
    pick(page, f"{unit[1:]}_model", "ip-adapter_tiny-sd")
    page.locator(f"{unit}_run_preview").click()
    expect(page.locator(f"{unit}_preview img").first).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    (png_dir / "square.png").write_bytes(page.request.get(page.locator(f"{unit}_preview img").first
                                                          .get_attribute("src")).body())
    with Image.open(png_dir / "square.png") as shown:
        assert shown.size == (224, 224) and shown.convert("RGB").getpixel((112, 112)) == (0, 0, 255)
    _set_prompt(page, PROMPT)
    set_number(page, "txt2img_seed", 7)
    infotext = generate_in(page, "txt2img")
    assert 'ControlNet 0: "Module: ip-adapter_clip_h, Model: ip-adapter_tiny-sd [' in infotext  # enabled units count
    page.locator("#txt2img_controlnet").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "ip-adapter.png"), full_page=True, animations="disabled")
    adapted = gallery_png(page, "txt2img", png_dir / "adapted.png")
    enabled = page.locator(f"{unit}_enabled input")
    enabled.uncheck()
    assert "ControlNet 0" not in generate_in(page, "txt2img")
    plain = gallery_png(page, "txt2img", png_dir / "plain.png")
    Image.new("L", (64, 64), 0).save(png_dir / "nowhere.png")
    page.locator(f"{unit}_region").get_by_text("Effective Region Mask", exact=True).click()
    region = page.locator(f"{unit}_effective_region_mask")
    region.locator("input[type=file]").set_input_files(str(png_dir / "nowhere.png"))
    expect(region.locator("img").first).to_be_visible()
    enabled.check()
    try:
        assert "ip-adapter_tiny-sd" in generate_in(page, "txt2img")
        masked = gallery_png(page, "txt2img", png_dir / "masked.png")
        page.screenshot(path=str(ARTIFACTS / "ip-adapter-region.png"), full_page=True, animations="disabled")
    finally:  # the unit off (its mask then unread), as the other tests expect the page
        page.locator(f"{unit}_region").get_by_text("Effective Region Mask", exact=True).click()
        enabled.uncheck()
    with Image.open(adapted) as a, Image.open(masked) as m, Image.open(plain) as p:
        pictures = [np.asarray(picture.convert("RGB"), dtype=int) for picture in (a, m, p)]
    assert np.abs(pictures[1] - pictures[2]).max() <= 1 < np.abs(pictures[0] - pictures[2]).max()


def _make_circle(path: Path) -> Path:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill="red")
    image.save(path)
    return path


def test_extras_upscales_with_an_upscaler_file(page, png_dir, tmp_path):
    """The Extras tab: the x4 upscaler file in models/ESRGAN, asked for 2x, gives a picture twice the size. On the
    page loaded afresh: a "Send to" of an earlier test can still switch the page's tab back under load."""
    page.reload()
    open_tab(page, "Extras")
    page.locator("#extras_image input[type=file]").set_input_files(str(_make_gradient(png_dir / "extras.png")))
    expect(page.locator("#extras_image img").first).to_be_visible()
    pick(page, "extras_upscaler_1", "tiny-x4")
    page.locator("#extras_generate").click()
    info = page.locator("#extras_info textarea")
    expect(info).to_have_value("Postprocess upscale by: 2, Postprocess upscaler: tiny-x4", timeout=GENERATION_TIMEOUT_MS)
    src = page.locator("#extras_result img").first.get_attribute("src")
    (tmp_path / "result.png").write_bytes(page.request.get(src).body())
    page.screenshot(path=str(ARTIFACTS / "extras.png"), full_page=True, animations="disabled")
    with Image.open(tmp_path / "result.png") as result:
        assert result.size == (128, 128)
