"""The Tiled Diffusion panel of every generation tab (the multidiffusion-upscaler extension's, ``pipelines/
tiled_diffusion.py``): its switch, method and latent tiles, under the extension's labels and defaults."""

from __future__ import annotations

import gradio as gr

from pipelines.tiled_diffusion import METHODS, NUMBERS

from .common import FieldSet, setting_slider


def build(fields: FieldSet) -> None:
    p = fields.prefix
    with gr.Accordion("Tiled Diffusion", open=False, elem_id=f"{p}_tiled_diffusion"):
        with gr.Row():
            fields.add("tiled_diffusion", gr.Checkbox(False, label="Enable Tiled Diffusion", elem_id=f"{p}_td_enable",
                                                      info="each step made on overlapping tiles of the latents, "
                                                           "blended: large pictures at the model's own scale, in a "
                                                           "tile's memory"))
            fields.add("td_method", gr.Dropdown(list(METHODS), value=METHODS[0], label="Method",
                                                elem_id=f"{p}_td_method"))
        for pair in (NUMBERS[:2], NUMBERS[2:]):
            with gr.Row():
                for number in pair:
                    setting_slider(fields, number, f"{p}_{number.field}")
