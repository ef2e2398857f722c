"""The Dynamic Thresholding panel of every generation tab (mcmonkey's extension, ``pipelines/dynamic_thresholding.py``):
its switch and mimic scale, and its advanced options, under the extension's labels and defaults."""

from __future__ import annotations

import gradio as gr

from pipelines.dynamic_thresholding import CHOICES, DEFAULTS, NUMBERS

from .common import FieldSet, setting_slider


def build(fields: FieldSet) -> None:
    p = fields.prefix
    mimic, percentile, mimic_min, cfg_min, value, phi = NUMBERS
    with gr.Accordion("Dynamic Thresholding (CFG Scale Fix)", open=False, elem_id=f"{p}_dynthres"):
        fields.add("dynamic_thresholding", gr.Checkbox(False, label="Enable Dynamic Thresholding (CFG Scale Fix)",
                                                       elem_id=f"{p}_dynthres_enabled",
                                                       info="a high CFG scale's guidance at a lower scale's spread: "
                                                            "the prompt followed as hard, without burning"))
        setting_slider(fields, mimic, f"{p}_{mimic.field}")
        with gr.Accordion("Advanced Options", open=False, elem_id=f"{p}_dynthres_advanced"):
            for row in ((percentile, phi), (mimic_min, cfg_min)):
                with gr.Row():
                    for setting in row:
                        setting_slider(fields, setting, f"{p}_{setting.field}")
            schedules, kinds = CHOICES[:2], CHOICES[2:]  # the schedules' dropdowns; the startpoint's and measure's
            with gr.Row():
                for name, label, choices in schedules:
                    fields.add(name, gr.Dropdown(list(choices), value=DEFAULTS[name], label=label,
                                                 elem_id=f"{p}_{name}"))
            setting_slider(fields, value, f"{p}_{value.field}")
            with gr.Row():
                fields.add("dt_separate_feature_channels", gr.Checkbox(
                    True, label="Separate Feature Channels", elem_id=f"{p}_dt_separate_feature_channels"))
                for name, label, choices in kinds:
                    fields.add(name, gr.Radio(list(choices), value=DEFAULTS[name], label=label, elem_id=f"{p}_{name}"))
