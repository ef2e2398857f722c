"""The img2img tab: an init image, how to fit it to the size, and how far to move away from it."""

from __future__ import annotations

import gradio as gr

from pipelines.request import RESIZE_MODES

from .common import FieldSet, GenerationTab, generation_tab


def resize_and_strength(fields: FieldSet) -> None:
    p = fields.prefix
    fields.add("resize_mode", gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], type="index", label="Resize mode",
                                       elem_id=f"{p}_resize_mode"))
    fields.add("denoising_strength", gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                               elem_id=f"{p}_denoising_strength"))


def _inputs(fields: FieldSet) -> dict:
    image = fields.add("init_image", gr.Image(label="Image for img2img", type="pil", sources=["upload", "clipboard"],
                                              elem_id="img2img_image", height=360))
    resize_and_strength(fields)
    return {"image": image}


def build(services, model: gr.Dropdown, defaults: dict) -> GenerationTab:
    return generation_tab(services, model, defaults, "img2img", _inputs)
