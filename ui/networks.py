"""The Networks panel under a tab's prompt: a card for every LoRA, embedding and hypernetwork on disk.

A card shows the file's preview picture when one lies beside it (``name.png``, ``name.preview.png``, ...) or a
lettered tile, its name, kind and family; clicking it adds the network to the prompt as A1111 does
(``<lora:name:1>``, the embedding's word, ``<hypernet:name:1>``). The search box filters by name, kind or family;
refresh reads the folders again (new files, previews). The cards are a Gallery, so no custom JavaScript is needed.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import gradio as gr
from PIL import Image, ImageDraw

from pipelines.networks import KINDS, LABELS, NetworkFile, describe

from .common import REFRESH

CARD = 160  # pixels


def _tag(item: NetworkFile) -> str:
    return item.name if item.kind == "embedding" else f"<{item.kind}:{item.name}:1>"


@lru_cache(maxsize=512)
def _picture(path: str | None, mtime: int, name: str) -> Image.Image:
    """The preview, squared to a card; without one, a tile in a colour of the name with its initials."""
    if path is not None:
        try:
            with Image.open(path) as image:
                picture = image.convert("RGB")
            picture.thumbnail((CARD, CARD))
            return picture
        except OSError:
            pass
    colour = tuple(64 + b // 2 for b in hashlib.sha1(name.encode()).digest()[:3])
    tile = Image.new("RGB", (CARD, CARD), colour)
    ImageDraw.Draw(tile).text((CARD / 2, CARD / 2), name[:2].upper(), fill="white", anchor="mm", font_size=56)
    return tile


def cards(services, query: str = "") -> list[tuple[NetworkFile, str]]:
    """The files matching ``query`` with their card captions (name, kind and family)."""
    networks = services.engine.networks
    found = []
    for kind in KINDS:
        for item in networks.files(kind):
            caption = f"{item.name} · {LABELS[kind]} · {describe(item)}"
            if query.strip().lower() in caption.lower():
                found.append((item, caption))
    return found


def _gallery(services, query: str = "") -> list[tuple[Image.Image, str]]:
    items = []
    for item, caption in cards(services, query):
        preview = item.preview
        items.append((_picture(str(preview) if preview else None, preview.stat().st_mtime_ns if preview else 0,
                               item.name), caption))
    return items


def insert(prompt: str, tag: str) -> str:
    """``tag`` appended to the prompt with a space, as A1111's cards do (once: a second click adds nothing)."""
    if tag in prompt.split():
        return prompt
    return f"{prompt.rstrip()} {tag}" if prompt.strip() else tag


def build(services, prompt: gr.Textbox, prefix: str) -> None:
    with gr.Accordion("Networks", open=False, elem_id=f"{prefix}_networks"):
        with gr.Row():
            search = gr.Textbox(placeholder="Search networks", show_label=False, container=False, scale=4,
                                elem_id=f"{prefix}_networks_search")
            refresh = gr.Button(REFRESH, scale=0, min_width=48, elem_id=f"{prefix}_networks_refresh")
        gallery = gr.Gallery(lambda: _gallery(services), show_label=False, columns=8, fit_columns=False, height=240,
                             allow_preview=False, object_fit="cover", elem_id=f"{prefix}_networks_cards")

    def click(query: str, text: str, evt: gr.SelectData):
        found = cards(services, query)
        return insert(text, _tag(found[evt.index][0])) if 0 <= evt.index < len(found) else text

    gallery.select(click, [search, prompt], prompt, api_visibility="private")
    search.change(lambda query: _gallery(services, query), search, gallery, api_visibility="private")
    refresh.click(lambda query: _gallery(services, query), search, gallery, api_visibility="private")
