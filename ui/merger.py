"""The Checkpoint Merger tab (A1111's): a new model from two or three, written into the models folder."""

from __future__ import annotations

import gradio as gr

from pipelines.errors import EaselError
from pipelines.merge import METHODS, MergeRequest, merge
from pipelines.registry import CHECKPOINT_DIR


def build(services, model: gr.Dropdown) -> None:
    """The tab; a merge refreshes ``model`` (the page's checkpoint list) so the new model can be picked at once."""
    registry = services.registry

    def names(optional: bool = False) -> list[str]:
        return ([""] if optional else []) + registry.names()

    with gr.Row():
        primary = gr.Dropdown(names(), label="Primary model (A)", elem_id="merger_primary", allow_custom_value=True)
        secondary = gr.Dropdown(names(), label="Secondary model (B)", elem_id="merger_secondary",
                                allow_custom_value=True)
        tertiary = gr.Dropdown(names(optional=True), value="", label="Tertiary model (C)", elem_id="merger_tertiary",
                               allow_custom_value=True)
    name = gr.Textbox("", label="Custom name (optional)", elem_id="merger_name")
    multiplier = gr.Slider(0.0, 1.0, value=0.3, step=0.05, label="Multiplier (M): set to 0 to get model A",
                           elem_id="merger_multiplier")
    method = gr.Radio(list(METHODS), value=METHODS[0], label="Interpolation method", elem_id="merger_method",
                      info="Weighted sum: A x (1 - M) + B x M. Add difference: A + (B - C) x M. No interpolation: A")
    run = gr.Button("Merge", variant="primary", elem_id="merger_merge")
    result = gr.Textbox(label="Result", interactive=False, elem_id="merger_result")
    for picker in (primary, secondary, tertiary):
        picker.focus(lambda optional=picker is tertiary: gr.Dropdown(choices=names(optional)), None, picker,
                     api_visibility="private")

    def merged(a, b, c, custom, m, how, current):
        try:
            made = merge(registry, MergeRequest(a or "", b or "", c or "", how, m, custom or ""))
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return (f"Saved {registry.models_dir.name}/{CHECKPOINT_DIR}/{made}.",
                gr.Dropdown(choices=names(), value=current))

    run.click(merged, [primary, secondary, tertiary, name, multiplier, method, model], [result, model],
              api_name="merge", concurrency_id="merge", concurrency_limit=1)
