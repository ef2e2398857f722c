"""Prompt styles under a tab's prompts (``pipelines/styles.py``): the styles to write into the prompts when the job
runs, A1111's button that writes them in now, and its style editor (save the prompts as a style, change or delete
one)."""

from __future__ import annotations

import gradio as gr

from pipelines.errors import EaselError
from pipelines.styles import Style

from .common import FieldSet

APPLY, COPY, SAVE, DELETE = "\U0001f58c\ufe0f", "\U0001f4cb", "\U0001f4be", "\U0001f5d1\ufe0f"


def build(services, fields: FieldSet) -> None:
    p, library = fields.prefix, services.engine.styles

    def names() -> list[str]:
        return list(library.styles())

    with gr.Row():
        styles = fields.add("styles", gr.Dropdown(names(), value=[], multiselect=True, scale=8,
                                                  label=f"Styles ({library.path.parent.name}/{library.path.name})",
                                                  elem_id=f"{p}_styles"))
        apply = gr.Button(APPLY, elem_id=f"{p}_styles_apply", scale=0, min_width=48)
    with gr.Accordion("Edit styles", open=False, elem_id=f"{p}_styles_editor"):
        with gr.Row():
            name = gr.Dropdown(names(), value=None, allow_custom_value=True, label="Style (pick one, or type a new "
                               "name)", elem_id=f"{p}_style_name", scale=4)
            buttons = {icon: gr.Button(icon, elem_id=f"{p}_style_{action}", scale=0, min_width=48)
                       for icon, action in ((COPY, "copy"), (SAVE, "save"), (DELETE, "delete"))}
        texts = [gr.Textbox("", label=label, lines=2, elem_id=f"{p}_style_{key}")
                 for key, label in (("prompt", "Style prompt ({prompt} takes the prompt's place)"),
                                    ("negative", "Style negative prompt"))]
    prompts = [fields.components["prompt"], fields.components["negative_prompt"]]

    def refreshed() -> tuple:
        return gr.Dropdown(choices=names()), gr.Dropdown(choices=names())

    def edited(change):
        def handler(*values):
            try:
                change(*values)
            except EaselError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            return refreshed()
        return handler

    def written(picked: list[str], prompt: str, negative: str):
        try:
            return *library.written(picked or [], prompt, negative), []
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def shown(picked: str | None):
        style = library.styles().get(picked or "")
        return (style.prompt, style.negative_prompt) if style else (gr.update(), gr.update())

    private = {"api_visibility": "private"}
    styles.focus(lambda: gr.Dropdown(choices=names()), None, styles, **private)
    name.focus(lambda: gr.Dropdown(choices=names()), None, name, **private)
    name.input(shown, name, texts, **private)
    apply.click(written, [styles, *prompts], [*prompts, styles], **private)
    buttons[COPY].click(lambda *values: values, prompts, texts, **private)
    buttons[SAVE].click(edited(lambda key, *parts: library.save(Style(key or "", *parts))), [name, *texts],
                        [styles, name], **private)
    buttons[DELETE].click(edited(lambda key: library.delete(key or "")), name, [styles, name], **private)
