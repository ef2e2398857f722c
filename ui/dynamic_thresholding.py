"""The Dynamic Thresholding panel of every generation tab (mcmonkey's extension, ``pipelines/dynamic_thresholding.py``):
its switch and mimic scale, and its advanced options, under the extension's labels and defaults."""

from __future__ import annotations

import gradio as gr

from pipelines.dynamic_thresholding import DEFAULTS, MEASURES, MODES, NUMBERS, STARTPOINTS

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
            with gr.Row():
                for name, label in (("dt_mimic_mode", "Mimic Scale Scheduler"), ("dt_cfg_mode", "CFG Scale Scheduler")):
                    fields.add(name, gr.Dropdown(list(MODES), value=DEFAULTS[name], label=label,
                                                 elem_id=f"{p}_{name}"))
            setting_slider(fields, value, f"{p}_{value.field}")
            with gr.Row():
                fields.add("dt_separate_feature_channels", gr.Checkbox(
                    True, label="Separate Feature Channels", elem_id=f"{p}_dt_separate_feature_channels"))
                fields.add("dt_scaling_startpoint", gr.Radio(list(STARTPOINTS), value=DEFAULTS["dt_scaling_startpoint"],
                                                             label="Scaling Startpoint",
                                                             elem_id=f"{p}_dt_scaling_startpoint"))
                fields.add("dt_variability_measure", gr.Radio(list(MEASURES),
                                                              value=DEFAULTS["dt_variability_measure"],
                                                              label="Variability Measure",
                                                              elem_id=f"{p}_dt_variability_measure"))
