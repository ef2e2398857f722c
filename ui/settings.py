"""The Settings tab (A1111's): every option of ``pipelines/config.py`` by section, under A1111's labels and element ids
(``setting_<key>``), changed by *Apply settings* and kept in ``config.json``; each takes effect at once. A1111's
search box above the sections keeps the options (and the sections) that match what is typed.

Options that are a generation field's default (clip skip, img2img's noise multiplier and colour correction) also set
that field in the tabs, when applied and when a page opens. Its *Defaults* section keeps the tabs' other fields' values
as those they start with (A1111's ui-config.json, ``ui/defaults.py``).
"""

from __future__ import annotations

import gradio as gr
from pipelines.config import OPTIONS, SECTIONS, Option
from pipelines.errors import RequestError

from .defaults import UiDefaults


def _widget(services, option: Option) -> gr.components.Component:
    """The option's widget, with its value as the page is made (``build`` shows later changes)."""
    common = {"label": option.label, "info": option.info or None, "elem_id": f"setting_{option.key}"}
    value = services.config[option.key]
    if isinstance(option.default, bool):
        return gr.Checkbox(value, **common)
    if option.choices:
        return gr.Radio(list(option.choices), value=value, **common)
    if option.high is not None:
        step = 1 if isinstance(option.default, int) else 0.01
        return gr.Slider(option.low, option.high, value=value, step=step, **common)
    if option.low is not None:
        return gr.Number(value, precision=0 if isinstance(option.default, int) else None, minimum=option.low,
                         **common)
    return gr.Textbox(value, **common)


def build(services, demo: gr.Blocks, generation_tabs: list) -> None:
    widgets = {}
    decided = {option.request_field for option in OPTIONS if option.request_field}
    ui_defaults = UiDefaults(services.settings.ui_config_file, generation_tabs, decided)
    ui_defaults.apply()
    apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")  # above the sections, as A1111's
    result = gr.Markdown(elem_id="settings_result")
    search = gr.Textbox(placeholder="Search...", show_label=False, max_lines=1, elem_id="settings_search")
    found = gr.Markdown(elem_id="settings_search_result")
    sections = {}
    with gr.Tabs(overflow_behavior="wrap", elem_id="settings_sections") as tabs:  # every section in sight, as A1111's
        for section in SECTIONS:
            with gr.Tab(section, id=f"settings_{section}") as sections[section]:
                for option in OPTIONS:
                    if option.section == section:
                        widgets[option.key] = _widget(services, option)
        with gr.Tab("Defaults") as defaults:
            _defaults_section(ui_defaults)
    # the tabs' fields an option is the default of, with the value each was built with
    linked = [(option.key, component) for option in OPTIONS if option.request_field
              for tab in generation_tabs if (component := tab.fields.components.get(option.request_field))]

    def apply_settings(*values):
        try:
            changed = services.configure(dict(zip(widgets, values)))
        except RequestError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        text = f"{_count(changed, 'setting')} changed" + (f": {', '.join(changed)}." if changed else ".")
        return [text, *(services.config[key] if key in changed else gr.update() for key, _ in linked)]

    apply.click(apply_settings, list(widgets.values()), [result, *(component for _, component in linked)],
                api_name="apply_settings")

    def searched(text: str):
        """A1111's search: the options whose label, description or key holds ``text``, the others hidden, and the
        sections that hold one (the first opened), the others greyed out; all of them again for an empty box. (A1111
        lists them on one page: Gradio makes an unopened tab's content only when it opens, and does not hide an
        unselected tab.)"""
        text = text.strip().lower()
        matches = {option.key for option in OPTIONS if text in f"{option.label} {option.info} {option.key}".lower()}
        note = (f"{_count(matches, 'setting')} found." if matches else f"No setting holds {text!r}.") if text else ""
        narrowed = bool(text and matches)
        held = [section for section in SECTIONS if any(o.key in matches for o in OPTIONS if o.section == section)]
        return [gr.Tabs(selected=f"settings_{held[0]}") if narrowed else gr.update(), note,
                *(gr.Tab(interactive=section in held or not narrowed) for section in SECTIONS),
                gr.Tab(interactive=not text), *(gr.update(visible=o.key in matches or not narrowed) for o in OPTIONS)]

    search.change(searched, search, [tabs, found, *sections.values(), defaults, *widgets.values()], queue=False,
                  show_progress="hidden", api_visibility="private")

    shown = [*widgets.items(), *linked]

    def refresh():
        """A page that opens shows the options as they are now where they changed since the page was made, and only
        there: a widget someone is already changing is not set again to the value it had."""
        return [services.config[key] if services.config[key] != component.value else gr.update()
                for key, component in shown]

    demo.load(refresh, None, [component for _, component in shown], api_visibility="private")


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _defaults_section(ui_defaults: UiDefaults) -> None:
    gr.Markdown("The txt2img, img2img and inpaint tabs' fields as they are now become the values they start with "
                "(A1111's ui-config.json); pages show them after Easel starts again. A field back at Easel's own "
                "value is taken out.")
    save = gr.Button("Save the tabs' values as their defaults", elem_id="settings_defaults_save")
    result = gr.Markdown(elem_id="settings_defaults_result")

    def save_defaults(*values):
        changed = ui_defaults.save(list(values))
        if not changed:
            return "No defaults changed."
        return (f"{_count(changed, 'default')} changed: {', '.join(key.removesuffix('/value') for key in changed)}. "
                "They show after Easel starts again.")

    # the fields' values as the page holds them (a choice by its value, not the index some handlers take), which is
    # how they start
    save.click(save_defaults, list(ui_defaults.fields.values()), result, api_name="save_ui_defaults", preprocess=False)
