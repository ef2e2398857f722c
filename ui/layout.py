"""The whole page: the model picker shared by every tab, one tab per feature, and the links between tabs."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from pipelines.errors import EaselError

from . import img2img, inpaint, png_info, txt2img
from .common import REFRESH, GenerationTab

# Per-model defaults applied to every generation tab's widgets when the model changes, in this order.
_DEFAULT_FIELDS = ("width", "height", "steps", "cfg_scale", "sampler", "scheduler")


def _size_multiple_of_8(image: Image.Image) -> tuple[int, int]:
    return tuple(min(2048, max(64, round(side / 8) * 8)) for side in image.size)


def _wire_send_to(tabs: gr.Tabs, sources: list[GenerationTab], targets: dict[str, tuple]) -> None:
    """"Send to img2img / inpaint" under every gallery: the picked image becomes the target's input and the
    target's size follows it."""
    for source in sources:
        for target_id, button in source.panel.send.items():
            image_widget, width, height, as_value = targets[target_id]

            def send(gallery, index, as_value=as_value, target_id=target_id):
                if not gallery:
                    raise gr.Error("Generate an image first.", print_exception=False)
                item = gallery[min(max(index, 0), len(gallery) - 1)]
                path = item[0] if isinstance(item, (list, tuple)) else item
                image = Image.open(path if isinstance(path, str) else path["path"]).convert("RGB")
                return as_value(image), *_size_multiple_of_8(image), gr.Tabs(selected=target_id)

            button.click(send, [source.panel.gallery, source.panel.selected], [image_widget, width, height, tabs],
                         api_visibility="private")


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
            with gr.Tab("img2img", id="img2img"):
                i2i = img2img.build(services, model, defaults)
            with gr.Tab("Inpaint", id="inpaint"):
                inp = inpaint.build(services, model, defaults)
            with gr.Tab("PNG Info", id="png_info"):
                png_info.build(services, t2i, model, tabs, "txt2img")
        generation_tabs = [t2i, i2i, inp]

        def size_of(tab: GenerationTab):
            return tab.fields.components["width"], tab.fields.components["height"]

        _wire_send_to(tabs, generation_tabs, {
            "img2img": (i2i.inputs["image"], *size_of(i2i), lambda image: image),
            "inpaint": (inp.inputs["editor"], *size_of(inp),
                        lambda image: {"background": image, "layers": [], "composite": image}),
        })

        def refresh_models(current: str | None):
            choices = registry.names()
            return gr.Dropdown(choices=choices, value=current if current in choices else (choices or [None])[0])

        refresh.click(refresh_models, model, model, api_name="refresh_models")

        def model_defaults(name: str | None):
            try:
                values = registry.resolve(name).defaults
            except EaselError:  # a typed name that is not a model: leave the widgets alone
                return [gr.update()] * len(_DEFAULT_FIELDS) * len(generation_tabs)
            return [values.get(key, gr.update()) for _ in generation_tabs for key in _DEFAULT_FIELDS]

        model.input(model_defaults, model,
                    [tab.fields.components[k] for tab in generation_tabs for k in _DEFAULT_FIELDS],
                    api_name="model_defaults")
    return demo
