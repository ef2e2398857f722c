"""What every browser test module shares: Debian's chromium (the module is skipped without it), timeouts, the
screenshot folder, and a page opened on an app."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (Playwright cannot download one offline)",
                allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts"  # screenshots (git-ignored), for a person to look at
TIMEOUT_MS = 60_000  # the CPU is slow and shared
GENERATION_TIMEOUT_MS = 240_000  # a first generation also loads the model
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@contextmanager
def open_page(url: str, height: int = 1100) -> Iterator:
    """A page of a fresh headless chromium on ``url``, with the tests' timeouts, once the app has rendered."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": height})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        try:
            expect(page.locator("#txt2img_generate")).to_be_visible()
            yield page
        finally:
            browser.close()


def _type_into(box, text: str) -> None:
    """Type ``text`` into a box and leave it, so the app receives it; again when the box takes its first value back
    (a box in an accordion just opened can, while it mounts)."""
    for _ in range(3):
        box.fill(text)
        box.blur()
        try:
            expect(box).to_have_value(text, timeout=5_000)
            return
        except AssertionError:
            continue
    expect(box).to_have_value(text)


def set_number(page, elem_id: str, value: float) -> None:
    """Type a value into a Gradio number or slider box (``_type_into``)."""
    _type_into(page.locator(f"#{elem_id} input[type=number]"), str(value))


def set_text(page, elem_id: str, text: str) -> None:
    """Type a text into a Gradio textbox (``_type_into``), and again if it took its first value back after (a box of
    an accordion just opened can, under load, after its own check passed: as ``set_numbers``)."""
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    for _ in range(3):
        _type_into(box, text)
        page.wait_for_timeout(500)
        if box.input_value() == text:
            return
    raise AssertionError(f"the box {elem_id} did not keep {text!r}")


def set_numbers(page, values: dict[str, float]) -> None:
    """``set_number`` for each box, then again for any that took its value back while the others were set (the boxes
    of an accordion just opened can, under load, after their own check passed)."""
    for _ in range(3):
        for elem_id, value in values.items():
            set_number(page, elem_id, value)
        page.wait_for_timeout(500)
        if all(page.locator(f"#{e} input[type=number]").input_value() == str(v) for e, v in values.items()):
            return
    raise AssertionError(f"the boxes did not keep {values}")


def open_tab(page, name: str, tab_id: str | None = None) -> None:
    """Open one of the page's tabs, and again while it is not the selected one (a click on a busy page can be lost);
    by its id where two tabs share a name (the Train tab's own Train)."""
    tab = (page.locator(f'button[role=tab][data-tab-id="{tab_id}"]') if tab_id
           else page.get_by_role("tab", name=name, exact=True))
    for _ in range(3):
        tab.click()
        try:
            expect(tab).to_have_attribute("aria-selected", "true", timeout=10_000)
            return
        except AssertionError:
            continue
    expect(tab).to_have_attribute("aria-selected", "true")


def pick(page, elem_id: str, option: str) -> None:
    """Choose ``option`` in a Gradio dropdown (its choices may be read again as it opens) and wait for it."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    page.locator(f"#{elem_id}").get_by_role("option", name=option, exact=True).click()  # its own list, not another's
    expect(box).to_have_value(option)


def generate_in(page, tab: str) -> str:
    """Click a tab's Generate and wait for its infotext to change and its gallery to show; returns the infotext."""
    info = page.locator(f"#{tab}_info textarea")
    before = info.input_value()
    page.locator(f"#{tab}_generate").click()
    expect(info).not_to_have_value(before or "", timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator(f"#{tab}_gallery img").first).to_be_visible()
    return info.input_value()


def gallery_png(page, tab: str, dest: Path, caption: str | None = None) -> Path:
    """The first picture of a tab's gallery (or the first with that ``caption``, "Seed 6"), as the browser gets it,
    saved to ``dest``."""
    src = page.locator(f"#{tab}_gallery img" + (f"[alt='{caption}']" if caption else "")).first.get_attribute("src")
    assert src, "the gallery image has no src"
    response = page.request.get(src)
    assert response.ok, f"GET {src} -> {response.status}"
    body = response.body()
    assert body[:8] == b"\x89PNG\r\n\x1a\n", f"the gallery image at {src} is not a PNG"
    dest.write_bytes(body)
    return dest


def paint_on(page, elem_id: str, rgb: tuple[int, int, int], size: int, points: list[tuple[float, float]],
             picture_size: tuple[int, int] = (64, 64)) -> None:
    """One stroke through ``points`` (the picture's pixels) with the editor's brush of the palette's colour ``rgb``
    and ``size``; the editor shows its picture centred at its zoom."""
    editor = page.locator(f"#{elem_id}")
    editor.locator("button[aria-label='Brush']").click()
    editor.locator("button[aria-label='Color']").click()
    editor.locator(f"button.color[style*='background-color: rgb{rgb}']").click()
    page.keyboard.press("Escape")
    editor.locator("button[aria-label='Brush Size']").click()
    editor.locator("input[type=range]").fill(str(size))
    page.keyboard.press("Escape")
    zoom = float(editor.locator(".zoom-number span").inner_text().rstrip("%")) / 100
    box = editor.locator("canvas").first.bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    def on_screen(point: tuple[float, float]) -> tuple[float, float]:
        return tuple(c + (p - side / 2) * zoom for c, p, side in zip(centre, point, picture_size))

    page.mouse.move(*on_screen(points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*on_screen(point), steps=4)
    page.mouse.up()
