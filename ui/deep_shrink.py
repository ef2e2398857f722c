"""The Deep Shrink panel of every generation tab (Forge's *Kohya HRFix Integrated*, ``pipelines/deep_shrink.py``):
its switch, block and factor, its span, where it shrinks and how it resizes, under Forge's labels and defaults."""

from __future__ import annotations

import gradio as gr

from pipelines.deep_shrink import CHOICES, DEFAULTS, METHODS, NUMBERS

from .common import FieldSet, setting_slider


def build(fields: FieldSet) -> None:
    p = fields.prefix
    with gr.Accordion("Kohya HRFix (Deep Shrink)", open=False, elem_id=f"{p}_deep_shrink_panel"):
        fields.add("deep_shrink", gr.Checkbox(False, label="Enabled", elem_id=f"{p}_deep_shrink",
                                              info="above the model's own size: its deeper blocks see the picture "
                                                   "shrunk while the noise is high, so it is composed once, not "
                                                   "repeated"))
        for pair in (NUMBERS[:2], NUMBERS[2:]):
            with gr.Row():
                for setting in pair:
                    setting_slider(fields, setting, f"{p}_{setting.field}")
        with gr.Row():
            fields.add("deep_shrink_after_skip", gr.Checkbox(True, label="Downscale After Skip",
                                                             elem_id=f"{p}_deep_shrink_after_skip"))
            fields.add("deep_shrink_phase2", gr.Checkbox(False, label="Do second phase",
                                                         info="after the end, up to 1.5 times it, shrunk half as much",
                                                         elem_id=f"{p}_deep_shrink_phase2"))
        with gr.Row():
            for name, label in CHOICES:
                fields.add(name, gr.Dropdown(list(METHODS), value=DEFAULTS[name], label=label, elem_id=f"{p}_{name}"))
