"""The PNG Info tab: read an image's generation parameters; send them to txt2img, or them and the picture to
img2img or inpaint, or the picture to Extras (the Image Browser's buttons are these too)."""

from __future__ import annotations

from typing import Callable

import gradio as gr
from PIL import Image

from pipelines.infotext import read_infotext

from .common import FIT, GenerationTab
from .transfer import SendTarget, wire_send_parameters, wire_send_picture

TARGETS = ("txt2img", "img2img", "inpaint", "extras")
# What wires a tab's "Send to" buttons once the tabs they fill exist: given the generation tabs and the pictures'
# send targets, by tab id.
Wiring = Callable[[dict[str, GenerationTab], dict[str, SendTarget]], None]


def png_info(path: str | None) -> str:
    if not path:
        return ""
    with Image.open(path) as image:
        return read_infotext(image) or "This image has no generation parameters."


def send_buttons(services, model: gr.Dropdown, tabs: gr.Tabs, prefix: str, image: gr.Image, text: gr.Textbox,
                 api_name: str | None = None) -> Wiring:
    """A row of "Send to" buttons for the picture whose path ``image`` holds and its parameters in ``text``: the
    parameters to txt2img (``api_name`` names that event), them and the picture to img2img or inpaint (as A1111's),
    the picture alone to Extras."""
    with gr.Row():
        buttons = {target: gr.Button(f"Send to {target}", elem_id=f"{prefix}_send_to_{target}")
                   for target in TARGETS}

    def wire(generation_tabs: dict[str, GenerationTab], targets: dict[str, SendTarget]) -> None:
        wire_send_parameters(services, buttons["txt2img"], text, generation_tabs["txt2img"], model, tabs,
                             api_name=api_name)
        for target in ("img2img", "inpaint"):
            wire_send_parameters(services, buttons[target], text, generation_tabs[target], model, tabs,
                                 picture=(image, targets[target]))
        wire_send_picture(tabs, buttons["extras"], image, targets["extras"])

    return wire


def build(services, model: gr.Dropdown, tabs: gr.Tabs) -> Wiring:
    """The tab; returns what wires its "Send to" buttons."""
    with gr.Row():
        image = gr.Image(label="Source", type="filepath", sources=["upload", "clipboard"], elem_id="pnginfo_image",
                         height=360, elem_classes=FIT)
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=8, interactive=False, elem_id="pnginfo_text")
            wire = send_buttons(services, model, tabs, "pnginfo", image, text, api_name="send_to_txt2img")
    image.change(png_info, image, text, api_name="png_info")
    return wire
