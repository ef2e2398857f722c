"""The Extras tab (A1111's): upscale a picture by one upscaler, optionally blended with a second one's."""

from __future__ import annotations

import gradio as gr

from pipelines import extras
from pipelines.errors import EaselError

from .common import FIT, GPU_QUEUE, REFRESH


def build(services) -> gr.Image:
    """The tab; returns its source picture (what "Send to extras" fills)."""
    models_dir = services.registry.models_dir

    def choices() -> gr.Dropdown:
        return gr.Dropdown(choices=extras.names(models_dir))

    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Source", type="pil", sources=["upload", "clipboard"], elem_id="extras_image",
                             height=360, elem_classes=FIT, image_mode="RGB", format="png")
            mode = gr.Radio(list(extras.RESIZE_MODES), value=extras.RESIZE_MODES[0], type="index", label="Resize",
                            elem_id="extras_resize_mode")
            with gr.Row():
                scale = gr.Slider(1.0, 8.0, value=2.0, step=0.05, label="Scale by", elem_id="extras_upscaling_resize")
                width = gr.Slider(64, 8192, value=512, step=8, label="Width", elem_id="extras_upscaling_resize_w")
                height = gr.Slider(64, 8192, value=512, step=8, label="Height", elem_id="extras_upscaling_resize_h")
                crop = gr.Checkbox(True, label="Crop to fit", elem_id="extras_upscaling_crop")
            with gr.Row():
                first = gr.Dropdown(extras.names(models_dir), value=extras.NONE, label="Upscaler 1",
                                    elem_id="extras_upscaler_1")
                second = gr.Dropdown(extras.names(models_dir), value=extras.NONE, label="Upscaler 2",
                                     elem_id="extras_upscaler_2")
                visibility = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="Upscaler 2 visibility",
                                       elem_id="extras_upscaler_2_visibility")
                refresh = gr.Button(REFRESH, elem_id="extras_refresh", scale=0, min_width=48)
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column():
            result = gr.Image(label="Result", type="pil", format="png", interactive=False, elem_id="extras_result",
                              height=360, elem_classes=FIT)
            info = gr.Textbox(label="Postprocessing", lines=2, interactive=False, elem_id="extras_info")

    def upscale(picture, resize_mode, by, to_width, to_height, crop_to_fit, upscaler_1, upscaler_2, share):
        try:
            request = extras.ExtrasRequest(picture, resize_mode, by, to_width, to_height, crop_to_fit, upscaler_1,
                                           upscaler_2, share)
            done, text, _ = services.engine.postprocess(request)
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return done, text

    run.click(upscale, [image, mode, scale, width, height, crop, first, second, visibility], [result, info],
              api_name="extras", concurrency_id=GPU_QUEUE, concurrency_limit=1)
    refresh.click(lambda: (choices(), choices()), None, [first, second], api_visibility="private")
    return image
