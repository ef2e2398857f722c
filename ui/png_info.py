"""The PNG Info tab: read an image's generation parameters and send them to txt2img."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from pipelines.infotext import read_infotext

from .common import FIT, GenerationTab
from .transfer import wire_send_parameters


def png_info(path: str | None) -> str:
    if not path:
        return ""
    with Image.open(path) as image:
        return read_infotext(image) or "This image has no generation parameters."


def build(services, txt2img: GenerationTab, model: gr.Dropdown, tabs: gr.Tabs) -> None:
    with gr.Row():
        image = gr.Image(label="Source", type="filepath", sources=["upload", "clipboard"], elem_id="pnginfo_image",
                         height=360, elem_classes=FIT)
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=8, interactive=False, elem_id="pnginfo_text")
            send = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")
    image.change(png_info, image, text, api_name="png_info")
    wire_send_parameters(services, send, text, txt2img, model, tabs, api_name="send_to_txt2img")
