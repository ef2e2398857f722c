"""The txt2img tab: the shared generation body with no task inputs of its own."""

from __future__ import annotations

import gradio as gr

from .common import GenerationTab, generation_tab


def build(services, model: gr.Dropdown, defaults: dict) -> GenerationTab:
    return generation_tab(services, model, defaults, "txt2img")
