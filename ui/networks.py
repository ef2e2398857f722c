"""The Networks panel under a tab's prompt: a card for every LoRA, embedding and hypernetwork on disk.

A card shows the file's preview picture when one lies beside it (``name.png``, ``name.preview.png``, ...) or a
lettered tile, its name, kind and family; clicking it adds the network to the prompt as A1111 does
(``<lora:name:1>``, the embedding's word, ``<hypernet:name:1>``) with what its user metadata asks (A1111's
``name.json``: the preferred weight in the tag, the activation text after it, the negative text in the negative
prompt), which the panel's editor changes. The search box filters by name, kind or family; refresh reads the folders
again (new files, previews). The cards are a Gallery, so no custom JavaScript is needed. LoRA Block Weight's presets
(``lbw=``, ``pipelines.networks.block_weights``) are edited in the panel too, in their ``lbwpresets.txt``.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import gradio as gr
from PIL import Image, ImageDraw

from pipelines.networks import KINDS, LABELS, USER_METADATA, NetworkFile, block_weights, describe

from .common import REFRESH, SAVE

CARD = 160  # pixels
BLANK = {key: 0 if key == "preferred weight" else "" for key in USER_METADATA}  # the editor's boxes with nothing set


def additions(item: NetworkFile, default_weight: float = 1.0) -> tuple[list[str], list[str]]:
    """What a card adds to the prompt (its tag or word, then its activation text) and to the negative prompt; the tag's
    weight is the network's preferred weight, else ``default_weight`` (A1111's extra_networks_default_multiplier)."""
    data = item.user_metadata()
    try:
        weight = float(data.get("preferred weight") or default_weight)
    except (TypeError, ValueError):
        weight = default_weight
    tag = item.name if item.kind == "embedding" else f"<{item.kind}:{item.name}:{weight:g}>"
    texts = [str(data.get(key) or "").strip() for key in ("activation text", "negative text")]
    return [tag, *texts[:1]], texts[1:]


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


def insert(prompt: str, *texts: str) -> str:
    """Each text appended to the prompt with a space, as A1111's cards do, unless the prompt holds it already (a
    second click adds nothing)."""
    for text in texts:
        if text and not re.search(rf"(?<!\S){re.escape(text)}(?!\S)", prompt):
            prompt = f"{prompt.rstrip()} {text}" if prompt.strip() else text
    return prompt


def build(services, prompts: tuple[gr.Textbox, gr.Textbox], prefix: str) -> None:
    """The panel under ``prompts`` (the prompt and the negative prompt)."""
    with gr.Accordion("Networks", open=False, elem_id=f"{prefix}_networks"):
        with gr.Row():
            search = gr.Textbox(placeholder="Search networks", show_label=False, container=False, scale=4,
                                elem_id=f"{prefix}_networks_search")
            refresh = gr.Button(REFRESH, scale=0, min_width=48, elem_id=f"{prefix}_networks_refresh")
        gallery = gr.Gallery(lambda: _gallery(services), show_label=False, columns=8, fit_columns=False, height=240,
                             allow_preview=False, object_fit="cover", elem_id=f"{prefix}_networks_cards")
        editor = _editor(services, prefix)
        _block_presets(services, prefix)

    def click(query: str, text: str, negative: str, evt: gr.SelectData):
        found = cards(services, query)
        if not 0 <= evt.index < len(found):
            return text, negative
        positive, negatives = additions(found[evt.index][0], services.config["extra_networks_default_multiplier"])
        return insert(text, *positive), insert(negative, *negatives)

    gallery.select(click, [search, *prompts], list(prompts), api_visibility="private")
    search.change(lambda query: _gallery(services, query), search, gallery, api_visibility="private")
    refresh.click(lambda query: (_gallery(services, query), gr.Dropdown(choices=list(_by_label(services)))), search,
                  [gallery, editor], api_visibility="private")


def _by_label(services) -> dict[str, NetworkFile]:
    return {f"{item.name} ({LABELS[item.kind]})": item for item, _ in cards(services)}


def _editor(services, prefix: str) -> gr.Dropdown:
    """A1111's card editor: a network's user metadata, saved into ``name.json`` beside it; returns its picker."""
    with gr.Accordion("Edit a network's metadata", open=False, elem_id=f"{prefix}_networks_editor"):
        with gr.Row():
            picked = gr.Dropdown(list(_by_label(services)), value=None, label="Network", scale=4,
                                 elem_id=f"{prefix}_network_picked")
            save = gr.Button(SAVE, scale=0, min_width=48, elem_id=f"{prefix}_network_save")
        boxes = {
            "description": gr.Textbox(label="Description", lines=2, elem_id=f"{prefix}_network_description"),
            "activation text": gr.Textbox(label="Activation text (added after the tag)",
                                          elem_id=f"{prefix}_network_activation"),
            "preferred weight": gr.Number(0, label="Preferred weight (0: the default multiplier)", step=0.05,
                                          elem_id=f"{prefix}_network_weight"),
            "negative text": gr.Textbox(label="Negative text (added to the negative prompt)",
                                        elem_id=f"{prefix}_network_negative"),
            "notes": gr.Textbox(label="Notes", lines=2, elem_id=f"{prefix}_network_notes"),
        }

    def shown(label: str | None):
        item = _by_label(services).get(label or "")
        data = item.user_metadata() if item else {}
        return [data.get(key, BLANK[key]) for key in USER_METADATA]

    def saved(label: str | None, *values):
        item = _by_label(services).get(label or "")
        if item is None:
            raise gr.Error("Pick a network to save its metadata.", print_exception=False)
        item.save_user_metadata({key: value or BLANK[key] for key, value in zip(USER_METADATA, values)})
        gr.Info(f"Saved {item.metadata_path.name}.")

    fields = [boxes[key] for key in USER_METADATA]
    picked.input(shown, picked, fields, api_visibility="private")
    save.click(saved, [picked, *fields], None, api_visibility="private")
    return picked


def _block_presets(services, prefix: str) -> None:
    """LoRA Block Weight's presets (its *Weights setting*): the extension's and ``lbwpresets.txt``'s, edited and
    saved into that file."""
    folder = services.engine.networks.lora_dir
    with gr.Accordion("LoRA Block Weight presets", open=False, elem_id=f"{prefix}_lbw"):
        gr.Markdown(
            "`<lora:name:1:lbw=OUTD>` sets a LoRA's weight block by block: a preset below, or 26 weights (BASE, "
            "IN00-IN11, M00, OUT00-OUT11), 17 (SD 1.x: BASE, IN01, IN02, IN04, IN05, IN07, IN08, M00, OUT03-OUT11) "
            "or 12 (SDXL: BASE, IN04, IN05, IN07, IN08, M00, OUT00-OUT05). One preset a line, `NAME:w,w,...`.")
        with gr.Row():
            text = gr.Textbox(lambda: block_weights.preset_text(folder), lines=8, max_lines=20, show_label=False,
                              scale=4, elem_id=f"{prefix}_lbw_presets")
            save = gr.Button(SAVE, scale=0, min_width=48, elem_id=f"{prefix}_lbw_save")

    def saved(value: str) -> str:
        try:
            count = block_weights.save_presets(folder, value)
        except ValueError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        gr.Info(f"Saved {count} presets to {block_weights.PRESETS_FILE}.")
        return block_weights.preset_text(folder)

    save.click(saved, text, text, api_visibility="private")
