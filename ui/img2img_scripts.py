"""The panels of A1111's img2img scripts that chain passes (``pipelines/img2img_scripts.py``): Loopback (img2img and
inpaint) and SD upscale (img2img)."""

from __future__ import annotations

import gradio as gr

from pipelines.img2img_scripts import CURVES, MAX_LOOPS, MAX_OVERLAP, MAX_SCALE

from .common import FieldSet, upscaler_picker


def build(services, fields: FieldSet, task: str) -> None:
    p = fields.prefix
    with gr.Accordion("Loopback", open=False, elem_id=f"{p}_loopback_panel"):
        fields.add("loopback", gr.Checkbox(False, label="Loopback: each picture is the next loop's init image",
                                           elem_id=f"{p}_loopback"))
        with gr.Row():
            fields.add("loopback_loops", gr.Slider(1, MAX_LOOPS, value=4, step=1, label="Loops",
                                                   elem_id=f"{p}_loopback_loops"))
            fields.add("loopback_final_strength", gr.Slider(0.0, 1.0, value=0.5, step=0.01,
                                                            label="Final denoising strength",
                                                            elem_id=f"{p}_loopback_final_strength"))
            fields.add("loopback_curve", gr.Radio(list(CURVES), value="Linear", label="Denoising strength curve",
                                                  elem_id=f"{p}_loopback_curve"))
    if task != "img2img":
        return
    with gr.Accordion("SD upscale", open=False, elem_id=f"{p}_sd_upscale_panel"):
        fields.add("sd_upscale", gr.Checkbox(False, label="SD upscale: upscale the picture, then repaint it in tiles "
                                             "of the width and height", elem_id=f"{p}_sd_upscale"))
        with gr.Row():
            fields.add("sd_upscale_overlap", gr.Slider(0, MAX_OVERLAP, value=64, step=16, label="Tile overlap",
                                                       elem_id=f"{p}_sd_upscale_overlap"))
            fields.add("sd_upscale_scale", gr.Slider(1.0, MAX_SCALE, value=2.0, step=0.05, label="Scale Factor",
                                                     elem_id=f"{p}_sd_upscale_scale"))
            upscaler_picker(services, fields, "sd_upscale_upscaler", "Lanczos", f"{p}_sd_upscale_upscaler")
