"""The whole page: the model picker shared by every tab, then one tab per feature."""

from __future__ import annotations

import gradio as gr

from pipelines.errors import EaselError

from . import png_info, txt2img
from .common import REFRESH

# Per-model defaults applied to the txt2img widgets when the model changes, in this order.
_DEFAULT_FIELDS = ("width", "height", "steps", "cfg_scale", "sampler", "scheduler")


def build_ui(services) -> gr.Blocks:
    registry = services.registry
    names = registry.names()
    default = registry.default_name() if names else None
    defaults = dict(registry.resolve(default).defaults) if default else {}

    with gr.Blocks(title="Easel", analytics_enabled=False) as demo:
        with gr.Row():
            model = gr.Dropdown(names, value=default, label="Stable Diffusion checkpoint", elem_id="model_select",
                                scale=4, allow_custom_value=True)
            refresh = gr.Button(REFRESH, elem_id="model_refresh", scale=0, min_width=48)
        with gr.Tabs() as tabs:
            with gr.Tab("txt2img", id="txt2img"):
                t2i = txt2img.build(services, model, defaults)
            with gr.Tab("PNG Info", id="png_info"):
                png_info.build(services, t2i, model, tabs, "txt2img")

        def refresh_models(current: str | None):
            choices = registry.names()
            return gr.Dropdown(choices=choices, value=current if current in choices else (choices or [None])[0])

        refresh.click(refresh_models, model, model, api_name="refresh_models")

        def model_defaults(name: str | None):
            try:
                values = registry.resolve(name).defaults
            except EaselError:  # a typed name that is not a model: leave the widgets alone
                return [gr.update()] * len(_DEFAULT_FIELDS)
            return [values.get(key, gr.update()) for key in _DEFAULT_FIELDS]

        model.input(model_defaults, model, [t2i.fields.components[k] for k in _DEFAULT_FIELDS],
                    api_name="model_defaults")
    return demo
