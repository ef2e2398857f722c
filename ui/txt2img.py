"""The txt2img tab."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .common import FieldSet, OutputPanel, output_panel, prompt_boxes, sampling_controls, wire_generation, \
    wire_seed_buttons


@dataclass
class Txt2ImgTab:
    fields: FieldSet
    panel: OutputPanel


def build(services, model: gr.Dropdown, defaults: dict) -> Txt2ImgTab:
    fields = FieldSet("txt2img")
    with gr.Row():
        with gr.Column(scale=5):
            prompt_boxes(fields)
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
            interrupt = gr.Button("Interrupt", variant="stop", elem_id="txt2img_interrupt")
    with gr.Row():
        with gr.Column():
            buttons = sampling_controls(fields, defaults)
        with gr.Column():
            panel = output_panel("txt2img")
    wire_seed_buttons(buttons, fields, panel)
    wire_generation(services, fields, panel, model, "txt2img", generate, interrupt)
    return Txt2ImgTab(fields, panel)
