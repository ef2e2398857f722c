"""The img2img tab: an init image (a sketch over one, or a folder of them), how to fit it to the size, and how far
to move from it."""

from __future__ import annotations

import gradio as gr
from PIL import Image, UnidentifiedImageError

from pipelines.errors import RequestError
from pipelines.request import MAX_NOISE_MULTIPLIER, RESIZE_MODES
from pipelines.variation import EXTRA_NOISE

from .common import FIT, FieldSet, GenerationTab, generation_tab, setting_slider
from .editor import editor_value, painted, sketch_editor


SIZE_FROM = ("Resize to", "Resize by")  # A1111's two tabs: the width and height, or the picture's size x a scale


def resize_and_strength(fields: FieldSet) -> None:
    p = fields.prefix
    fields.add("resize_mode", gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], type="index", label="Resize mode",
                                       elem_id=f"{p}_resize_mode"))
    with gr.Row():
        fields.add("size_from", gr.Radio(list(SIZE_FROM), value=SIZE_FROM[0], type="index", label="Size",
                                         info="Resize to: width and height below; Resize by: the picture's x the scale",
                                         elem_id=f"{p}_size_from", scale=2))
        fields.add("scale_by", gr.Slider(0.05, 4.0, value=1.0, step=0.05, label="Scale", elem_id=f"{p}_scale_by",
                                         scale=3))
    with gr.Row():
        fields.add("denoising_strength", gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                                   elem_id=f"{p}_denoising_strength", scale=3))
        fields.add("color_correction", gr.Checkbox(False, label="Color correction",
                                                   info="keep the picture's colours", elem_id=f"{p}_color_correction",
                                                   scale=1, min_width=120))
    with gr.Row():
        fields.add("initial_noise_multiplier", gr.Slider(0.0, MAX_NOISE_MULTIPLIER, value=1.0, step=0.01,
                                                         label="Noise multiplier", elem_id=f"{p}_noise_multiplier",
                                                         info="of the noise added to the picture"))
        setting_slider(fields, EXTRA_NOISE, f"{p}_extra_noise")


def _inputs(fields: FieldSet) -> dict:
    image = fields.add("init_image", gr.Image(label="Image for img2img", type="pil", sources=["upload", "clipboard"],
                                              elem_id="img2img_image", height=360, elem_classes=FIT, format="png"))
    with gr.Accordion("Sketch: paint over a picture", open=False, elem_id="img2img_sketch_panel"):
        sketch = fields.add("sketch", sketch_editor("Sketch (the picture with its paint replaces the image above)",
                                                    "img2img_sketch", 360))
        gr.Button("Sketch over the image above", size="sm", elem_id="img2img_sketch_copy").click(
            editor_value, image, sketch, api_visibility="private")
    with gr.Accordion("Batch: every image of a folder", open=False):
        fields.add("batch_files", gr.File(label="Folder of images (replaces the image above)", file_count="directory",
                                          elem_id="img2img_batch"))
    resize_and_strength(fields)
    return {"image": image}


def sized(values: dict) -> dict:
    """A1111's "Resize by": the width and height are the init picture's times the scale (multiples of 8, 64-2048)."""
    size_from, scale = values.pop("size_from", 0), values.pop("scale_by", 1.0)
    image = values.get("init_image")
    if size_from != 1 or image is None:
        return values
    width, height = (min(2048, max(64, round(side * scale / 8) * 8)) for side in image.size)
    return {**values, "width": width, "height": height}


def _open_image(path: str) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        return None  # not a picture: a batch folder may hold other files


def prepare(values: dict) -> dict | list[dict]:
    """One request, or one per picture of the uploaded folder (other files are skipped; the folder wins over a
    sketch, and a sketch over the image)."""
    files = values.pop("batch_files", None)
    sketch = painted(values.pop("sketch", None))  # A1111's Sketch: the picture with its paint on
    if not files:
        return sized(values if sketch is None else {**values, "init_image": sketch})
    images = [image for image in map(_open_image, sorted(files)) if image is not None]
    if not images:
        raise RequestError("The folder holds no images.")
    return [sized({**values, "init_image": image}) for image in images]  # each by its own size


def build(services, model: gr.Dropdown, defaults: dict) -> GenerationTab:
    return generation_tab(services, model, defaults, "img2img", _inputs, prepare)
