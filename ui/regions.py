"""The Regional Prompter panel of every generation tab (the extension's Matrix mode, ``pipelines/regions.py``),
with its *visualize and make template*."""

from __future__ import annotations

import gradio as gr

from pipelines.errors import RequestError
from pipelines.regions import SPLITTINGS, RegionalSettings

from .common import FIT, FieldSet


def build(fields: FieldSet) -> None:
    """The extension's labels and defaults; its regions drawn at the tab's width and height on request."""
    p = fields.prefix
    with gr.Accordion("Regional Prompter", open=False, elem_id=f"{p}_regional_prompter"):
        fields.add("regional_prompter", gr.Checkbox(False, label="Active", elem_id=f"{p}_rp_active",
                                                    info="regions separated by BREAK (or AND), ADDCOL and ADDROW in "
                                                         "the prompt; ADDBASE and ADDCOMM after a base and a common "
                                                         "prompt"))
        with gr.Row():
            fields.add("rp_splitting", gr.Radio(list(SPLITTINGS), value=SPLITTINGS[0], label="Main Splitting",
                                                elem_id=f"{p}_rp_splitting"))
            fields.add("rp_ratios", gr.Textbox("1,1", label="Divide Ratio", elem_id=f"{p}_rp_ratios",
                                               info="1,2,1: three, the middle twice as large; ; makes rows "
                                                    "(1,2,1;2,1,1: each row's height, then its widths)"))
            fields.add("rp_base_ratios", gr.Textbox("0.2", label="Base Ratio", elem_id=f"{p}_rp_base_ratios",
                                                    info="the base prompt's share: one, or one per region"))
        with gr.Row():
            fields.add("rp_use_base", gr.Checkbox(False, label="Use base prompt", elem_id=f"{p}_rp_use_base"))
            fields.add("rp_use_common", gr.Checkbox(False, label="Use common prompt", elem_id=f"{p}_rp_use_common"))
        with gr.Row():
            with gr.Column():
                show = gr.Button("Visualize and make template", elem_id=f"{p}_rp_visualize")
                template = gr.Textbox(label="Template", lines=3, elem_id=f"{p}_rp_template")
            areas = gr.Image(label="Regions", type="pil", interactive=False, height=192, elem_classes=FIT,
                             elem_id=f"{p}_rp_areas")
    names = ["rp_splitting", "rp_ratios", "rp_base_ratios", "rp_use_base", "rp_use_common", "width", "height"]

    def visualize(splitting, ratios, base_ratios, use_base, use_common, width, height):
        try:
            settings = RegionalSettings.checked(splitting, ratios, base_ratios, use_base, use_common)
        except RequestError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return settings.sketch(int(width), int(height))

    show.click(visualize, [fields.components[name] for name in names], [areas, template], api_visibility="private")
