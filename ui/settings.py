"""The Settings tab (A1111's): every option of ``pipelines/config.py`` by section, under A1111's labels and element ids
(``setting_<key>``), changed by *Apply settings* and kept in ``config.json``; each takes effect at once.

Options that are a generation field's default (clip skip, img2img's noise multiplier and colour correction) also set
that field in the tabs, when applied and when a page opens.
"""

from __future__ import annotations

import gradio as gr
from pipelines.config import OPTIONS, SECTIONS, Option
from pipelines.errors import RequestError


def _widget(services, option: Option) -> gr.components.Component:
    """The option's widget, showing its value whenever a page opens (another page may have changed it)."""
    common = {"label": option.label, "info": option.info or None, "elem_id": f"setting_{option.key}"}
    value = lambda: services.config[option.key]  # noqa: E731 (Gradio calls it on every page load)
    if isinstance(option.default, bool):
        return gr.Checkbox(value, **common)
    if option.choices:
        return gr.Radio(list(option.choices), value=value, **common)
    if option.low is not None:
        step = 1 if isinstance(option.default, int) else 0.01
        return gr.Slider(option.low, option.high, value=value, step=step, **common)
    return gr.Textbox(value, **common)


def build(services, demo: gr.Blocks, generation_tabs: list) -> None:
    widgets = {}
    with gr.Tabs(elem_id="settings_sections"):
        for section in SECTIONS:
            with gr.Tab(section):
                for option in OPTIONS:
                    if option.section == section:
                        widgets[option.key] = _widget(services, option)
    apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
    result = gr.Markdown(elem_id="settings_result")
    # the tabs' fields an option is the default of, with the value each was built with
    linked = [(option.key, component) for option in OPTIONS if option.request_field
              for tab in generation_tabs if (component := tab.fields.components.get(option.request_field))]

    def apply_settings(*values):
        try:
            changed = services.configure(dict(zip(widgets, values)))
        except RequestError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        text = f"{len(changed)} settings changed" + (f": {', '.join(changed)}." if changed else ".")
        return [text, *(services.config[key] if key in changed else gr.update() for key, _ in linked)]

    apply.click(apply_settings, list(widgets.values()), [result, *(component for _, component in linked)],
                api_name="apply_settings")

    def fill_fields():
        """The options' values in the tabs' fields of a page that opens, where they differ from those built in."""
        return [services.config[key] if services.config[key] != component.value else gr.update()
                for key, component in linked]

    demo.load(fill_fields, None, [component for _, component in linked], api_visibility="private")
