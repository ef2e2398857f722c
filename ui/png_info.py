"""The PNG Info tab: read an image's generation parameters and send them to txt2img."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from pipelines.errors import EaselError
from pipelines.infotext import read_infotext
from pipelines.request import GenerationRequest

from .common import GenerationTab

# Request fields that "Send to txt2img" fills, in the order of the handler's outputs.
_SENT_FIELDS = ("prompt", "negative_prompt", "sampler", "scheduler", "steps", "cfg_scale", "width", "height", "seed",
                "clip_skip")


def png_info(path: str | None) -> str:
    if not path:
        return ""
    with Image.open(path) as image:
        return read_infotext(image) or "This image has no generation parameters."


def build(services, txt2img: GenerationTab, model: gr.Dropdown, tabs: gr.Tabs, txt2img_tab_id: str) -> None:
    with gr.Row():
        image = gr.Image(label="Source", type="filepath", sources=["upload", "clipboard"], elem_id="pnginfo_image")
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=8, interactive=False, elem_id="pnginfo_text")
            send = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")
    image.change(png_info, image, text, api_name="png_info")

    targets = [txt2img.fields.components[name] for name in _SENT_FIELDS]

    def send_to_txt2img(infotext: str):
        try:
            request = GenerationRequest.from_infotext(infotext or "")
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        known_model = request.model if request.model in services.registry.names() else gr.update()
        return [getattr(request, name) for name in _SENT_FIELDS] + [known_model, gr.Tabs(selected=txt2img_tab_id)]

    send.click(send_to_txt2img, text, [*targets, model, tabs], api_name="send_to_txt2img")
