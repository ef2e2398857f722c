"""The Image Browser tab (A1111's image browser extension, InvokeAI's gallery): every picture saved under the
outputs folder, newest first, a page at a time, by folder and by words in its parameters; the picked one at full
size with its parameters, the PNG Info tab's "Send to" buttons, and Delete (once asked again).

The page's files stay on the server (a State), so the browser can only pick among them, never name a path.
"""

from __future__ import annotations

import math

import gradio as gr

from pipelines.saved_images import ALL, FOLDERS, SavedImage, delete, saved_images

from .common import CLEAR, FIT, REFRESH
from .png_info import Wiring, png_info, send_buttons

PAGE_SIZE = 36
COLUMNS = 6  # thumbnails a row, also on a page of fewer (the page's CSS: ui/layout.py)


def _page(root, folder: str, search: str, number: float | None):
    """The thumbnails of page ``number`` (kept within the pages there are), the pictures on it, the page number and a
    line saying where that is."""
    images = saved_images(root, folder, search or "")
    pages = max(1, math.ceil(len(images) / PAGE_SIZE))
    number = min(max(1, int(number or 1)), pages)
    shown = images[(number - 1) * PAGE_SIZE:number * PAGE_SIZE]
    if images:
        first = (number - 1) * PAGE_SIZE + 1
        where = f"Page {number} of {pages}: pictures {first}-{first + len(shown) - 1} of {len(images)}, newest first."
    else:
        where = "No picture matches these words." if (search or "").strip() else "No pictures saved here yet."
    thumbnails = [(image.thumbnail, image.path.name) for image in shown]
    return gr.update(value=thumbnails, selected_index=None), shown, number, where


def build(services, model: gr.Dropdown, tabs: gr.Tabs, tab: gr.Tab) -> Wiring:
    """The tab (``tab``: its own, whose opening lists the pictures again); returns what wires its "Send to"
    buttons."""
    root = services.settings.outputs_dir
    with gr.Row():
        folder = gr.Dropdown([ALL, *FOLDERS], value=ALL, label="Folder", elem_id="browser_folder", scale=1)
        search = gr.Textbox(label="Search", placeholder="words in the prompt or parameters; Enter to search",
                            elem_id="browser_search", scale=3)
        refresh = gr.Button(REFRESH, elem_id="browser_refresh", scale=0, min_width=48)
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Pictures", columns=COLUMNS, height=560, allow_preview=False,
                                 object_fit="contain", elem_id="browser_gallery")
            with gr.Row():
                previous = gr.Button("◀ Previous", size="sm", elem_id="browser_previous")
                number = gr.Number(1, label="Page", precision=0, minimum=1, elem_id="browser_page", min_width=80)
                following = gr.Button("Next ▶", size="sm", elem_id="browser_next")
            where = gr.Markdown(elem_id="browser_where")
        with gr.Column(scale=2):
            image = gr.Image(label="Picture", type="filepath", interactive=False, elem_id="browser_image", height=360,
                             elem_classes=FIT)
            file = gr.Textbox(label="File", interactive=False, elem_id="browser_file")
            text = gr.Textbox(label="Parameters", lines=8, interactive=False, elem_id="browser_text")
            wire = send_buttons(services, model, tabs, "browser", image, text)
            remove = gr.Button(f"{CLEAR} Delete", size="sm", variant="stop", elem_id="browser_delete")
            with gr.Column(visible=False) as asking:
                question = gr.Markdown(elem_id="browser_delete_question")
                with gr.Row():
                    really = gr.Button("Delete it", size="sm", variant="stop", elem_id="browser_delete_confirm")
                    keep = gr.Button("Keep it", size="sm", elem_id="browser_delete_cancel")
    shown = gr.State([])  # the SavedImages on the page, in the gallery's order
    picked = gr.State(None)  # the SavedImage shown on the right

    def show(turn: int | None):  # None: from the first page
        def handler(folder_name: str, words: str, page: float | None):
            return _page(root, folder_name, words, 1 if turn is None else (page or 1) + turn)
        return handler

    listing = [gallery, shown, number, where]
    for event, turn in ((folder.change, None), (search.submit, None), (refresh.click, 0), (tab.select, 0),
                        (number.submit, 0), (previous.click, -1), (following.click, 1)):
        event(show(turn), [folder, search, number], listing, api_visibility="private")

    def pick(images: list[SavedImage], evt: gr.SelectData):
        chosen = images[evt.index]
        return str(chosen.path), str(chosen.path.relative_to(root)), png_info(str(chosen.path)), chosen

    gallery.select(pick, shown, [image, file, text, picked], api_visibility="private")

    def ask(chosen: SavedImage | None):
        if chosen is None:
            raise gr.Error("Pick a picture to delete first.", print_exception=False)
        where = chosen.path.relative_to(root)
        return gr.Column(visible=True), f"Delete **{where}** (and its .txt)? It cannot be undone."

    def remove_picked(chosen: SavedImage | None, folder_name: str, words: str, page: float | None):
        if chosen is not None:
            delete(root, chosen)
            gr.Info(f"Deleted {chosen.path.relative_to(root)}.")
        return (*_page(root, folder_name, words, page), None, "", "", None, gr.Column(visible=False))

    remove.click(ask, picked, [asking, question], api_visibility="private")
    keep.click(lambda: gr.Column(visible=False), None, asking, api_visibility="private")
    really.click(remove_picked, [picked, folder, search, number], [*listing, image, file, text, picked, asking],
                 api_visibility="private")
    return wire
