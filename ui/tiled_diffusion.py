"""The Tiled Diffusion panel of every generation tab (the multidiffusion-upscaler extension's, ``pipelines/
tiled_diffusion.py``): its switch, method and latent tiles, and in img2img and inpaint its upscaler, under the
extension's labels and defaults."""

from __future__ import annotations

import gradio as gr

from pipelines.tiled_diffusion import METHODS, NO_UPSCALER, NUMBERS, SCALE_FACTOR

from .common import FieldSet, setting_slider, upscaler_picker


def build(services, fields: FieldSet) -> None:
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
        if p == "txt2img":
            return
        with gr.Row():
            upscaler_picker(services, fields, "td_upscaler", NO_UPSCALER, f"{p}_td_upscaler",
                            info="the picture upscaled first, by the factor")
            setting_slider(fields, SCALE_FACTOR, f"{p}_{SCALE_FACTOR.field}")
        fields.add("td_keep_input_size", gr.Checkbox(True, label="Keep input image size",
                                                     elem_id=f"{p}_td_keep_input_size",
                                                     info="the upscale starts from the picture's own size; off: "
                                                          "from the width and height"))
