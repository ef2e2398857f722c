"""The whole page: the model picker shared by every tab, one tab per feature, and the links between tabs."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
from pipelines.checkpoints import AUTOMATIC, vae_names
from pipelines.config import CHECKPOINT, SOUND
from pipelines.errors import EaselError

from . import (compare, extras, image_browser, img2img, inpaint, merger, models, png_info, settings, train,
               txt2img)
from .common import GPU_QUEUE, REFRESH
from .editor import editor_value
from .transfer import SendTarget, wire_read_parameters, wire_send_images, wire_send_parameters

BELL = "\U0001f514"  # A1111's "Request browser notifications" (ui/notify.js)

# The page's own style, passed to ``launch`` (Gradio 6 takes CSS there). Gradio shows a picture smaller than its
# panel at its own size: a live preview (one pixel per latent, ``pipelines/preview.py``) or a 64-pixel input was a
# dot. Pictures of the ``FIT`` class fill their panel instead. The Image Browser's thumbnails keep their size on a page
# of fewer than a row (Gradio widens a gallery's cells to fill the row, then the rows to fill its height). Generate
# forever's menu and its running button.
CSS = """.easel-fit img { object-fit: contain; width: 100%; height: 100%; }
#browser_gallery .grid-container {
  grid-template-columns: repeat(""" + str(image_browser.COLUMNS) + """, minmax(0, 1fr));
  grid-template-rows: none; grid-auto-rows: auto; }
.easel-forever { outline: 3px dashed var(--color-accent); outline-offset: 2px; }
.easel-menu { position: absolute; z-index: 1000; background: var(--background-fill-primary);
  border: 1px solid var(--border-color-primary); border-radius: 6px; box-shadow: var(--shadow-drop-lg); }
.easel-menu button { display: block; padding: 6px 14px; font: inherit; color: inherit; border: none; background: none;
  cursor: pointer; }
.easel-menu button:hover { background: var(--background-fill-secondary); }"""
# The page's scripts, each a function run once when the page loads: A1111's keyboard shortcuts (Ctrl+Enter,
# Alt+Enter, Ctrl+Up/Down on prompt weights), its Generate forever and its browser notifications.
SCRIPTS = ("shortcuts.js", "forever.js", "notify.js")
# What ``launch`` gives the page (Gradio 6 takes CSS and one JavaScript function there).
PAGE = {"css": CSS, "js": "() => {\n" + "\n".join(f"({(Path(__file__).parent / name).read_text(encoding='utf-8')})();"
                                                     for name in SCRIPTS) + "\n}"}

# Per-model defaults applied to every generation tab's widgets when the model changes, in this order.
_DEFAULT_FIELDS = ("width", "height", "steps", "cfg_scale", "sampler", "scheduler")


def _vae_choices(registry) -> dict:
    """A1111's SD VAE setting: a VAE from models/VAE for every model whose easel.json names none, or each model's
    own ("Automatic"); shown only when models/VAE holds one."""
    names = vae_names(registry.models_dir)
    return {"choices": [AUTOMATIC, *names], "value": registry.vae or AUTOMATIC, "visible": bool(names)}


def _notification_sound(services) -> None:
    """A1111's notification sound: ``notification.mp3`` beside the settings file, an ``<audio>`` that ui/notify.js
    plays when a job ends, with the settings' volume; the settings are read as a page opens (A1111 asks for a reload)
    and the file as Easel starts."""
    sound = services.config.path.parent / SOUND if services.config.path else None
    if sound is None or not sound.is_file():
        return
    gr.set_static_paths([str(sound)])

    def tag() -> str:
        on, volume = services.config["notification_audio"], services.config["notification_volume"]
        return (f'<audio id="easel_notification_sound" src="/gradio_api/file={html.escape(str(sound))}" '
                f'preload="auto" data-play="{str(on).lower()}" data-volume="{volume / 100:g}"></audio>')

    gr.HTML(tag, container=False, padding=False, elem_id="easel_notification")


def build_ui(services) -> gr.Blocks:
    registry = services.registry
    names = registry.names()
    default = registry.default_name() if names else None
    defaults = dict(registry.resolve(default).defaults) if default else {}

    with gr.Blocks(title="Easel", analytics_enabled=False) as demo:
        with gr.Row():
            model = gr.Dropdown(names, value=default, label="Stable Diffusion checkpoint", elem_id="model_select",
                                scale=4, allow_custom_value=True)
            vae = gr.Dropdown(**_vae_choices(registry), label="SD VAE", elem_id="vae_select", scale=2)
            refresh = gr.Button(REFRESH, elem_id="model_refresh", scale=0, min_width=48)
            gr.Button(BELL, elem_id="request_notifications", scale=0, min_width=48)  # ui/notify.js answers it
        with gr.Tabs() as tabs:
            with gr.Tab("txt2img", id="txt2img"):
                t2i = txt2img.build(services, model, defaults)
            with gr.Tab("img2img", id="img2img"):
                i2i = img2img.build(services, model, defaults)
            with gr.Tab("Inpaint", id="inpaint"):
                inp = inpaint.build(services, model, defaults)
            with gr.Tab("Extras", id="extras"):
                extras_image = extras.build(services)
            with gr.Tab("Compare", id="compare"):
                compare.build(services, model, defaults)
            with gr.Tab("PNG Info", id="png_info"):
                wire_png_info = png_info.build(services, model, tabs)
            with gr.Tab("Image Browser", id="image_browser") as browser_tab:
                wire_browser = image_browser.build(services, model, tabs, browser_tab)
            with gr.Tab("Checkpoint Merger", id="merger"):
                merger.build(services, model)
            with gr.Tab("Train", id="train"):
                train.build(services, model, t2i.fields.components)
            with gr.Tab("Models", id="models"):
                models.build(services)
            with gr.Tab("Settings", id="settings"):
                settings.build(services, demo, [t2i, i2i, inp])
        _notification_sound(services)  # under the tabs: an <audio> takes no room, its block a row's gap
        generation_tabs = [t2i, i2i, inp]
        targets = {
            "img2img": SendTarget(i2i.inputs["image"], "img2img", size=i2i.size),
            "inpaint": SendTarget(inp.inputs["editor"], "inpaint", editor_value, inp.size),
            "extras": SendTarget(extras_image, "extras"),
            "controlnet": SendTarget(t2i.inputs["controlnet"][0]["image"], "txt2img", size=t2i.size),
        }
        wire_send_images(tabs, generation_tabs, targets)
        for wire in (wire_png_info, wire_browser):
            wire({"txt2img": t2i, "img2img": i2i, "inpaint": inp}, targets)
        for tab in (i2i, inp):
            wire_send_parameters(services, tab.panel.send["txt2img"], tab.panel.infotext, t2i, model, tabs)
        for tab in generation_tabs:
            wire_read_parameters(services, tab, model)

        def refresh_models(current: str | None):
            choices = registry.names()
            return (gr.Dropdown(choices=choices, value=current if current in choices else (choices or [None])[0]),
                    gr.Dropdown(**_vae_choices(registry)))

        refresh.click(refresh_models, model, [model, vae], api_name="refresh_models")

        def set_vae(name: str):
            try:
                services.set_vae(name)
            except EaselError as exc:
                raise gr.Error(str(exc), print_exception=False) from None

        vae.input(set_vae, vae, None, api_name="set_vae", concurrency_id=GPU_QUEUE)

        def model_defaults(name: str | None):
            """The picked model's defaults in every tab; the next start opens on it (A1111's kept checkpoint)."""
            try:
                info = registry.resolve(name)
            except EaselError:  # a typed name that is not a model: leave the widgets alone
                return [gr.update()] * len(_DEFAULT_FIELDS) * len(generation_tabs)
            services.config.keep(CHECKPOINT, info.name)
            return [info.defaults.get(key, gr.update()) for _ in generation_tabs for key in _DEFAULT_FIELDS]

        model.input(model_defaults, model,
                    [tab.fields.components[k] for tab in generation_tabs for k in _DEFAULT_FIELDS],
                    api_name="model_defaults")
    return demo
