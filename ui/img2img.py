"""The img2img tab: an init image (or a folder of them), how to fit it to the size, and how far to move from it."""

from __future__ import annotations

import gradio as gr
from PIL import Image, UnidentifiedImageError

from pipelines.errors import RequestError
from pipelines.request import MAX_NOISE_MULTIPLIER, RESIZE_MODES

from .common import FIT, FieldSet, GenerationTab, generation_tab


def resize_and_strength(fields: FieldSet) -> None:
    p = fields.prefix
    fields.add("resize_mode", gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], type="index", label="Resize mode",
                                       elem_id=f"{p}_resize_mode"))
    with gr.Row():
        fields.add("denoising_strength", gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                                   elem_id=f"{p}_denoising_strength", scale=3))
        fields.add("initial_noise_multiplier", gr.Slider(0.0, MAX_NOISE_MULTIPLIER, value=1.0, step=0.01,
                                                         label="Noise multiplier", elem_id=f"{p}_noise_multiplier",
                                                         info="of the noise added to the picture", scale=2))


def _inputs(fields: FieldSet) -> dict:
    image = fields.add("init_image", gr.Image(label="Image for img2img", type="pil", sources=["upload", "clipboard"],
                                              elem_id="img2img_image", height=360, elem_classes=FIT, format="png"))
    with gr.Accordion("Batch: every image of a folder", open=False):
        fields.add("batch_files", gr.File(label="Folder of images (replaces the image above)", file_count="directory",
                                          elem_id="img2img_batch"))
    resize_and_strength(fields)
    return {"image": image}


def _open_image(path: str) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        return None  # not a picture: a batch folder may hold other files


def prepare(values: dict) -> dict | list[dict]:
    """One request, or one per picture of the uploaded folder (other files are skipped)."""
    files = values.pop("batch_files", None)
    if not files:
        return values
    images = [image for image in map(_open_image, sorted(files)) if image is not None]
    if not images:
        raise RequestError("The folder holds no images.")
    return [{**values, "init_image": image} for image in images]


def build(services, model: gr.Dropdown, defaults: dict) -> GenerationTab:
    return generation_tab(services, model, defaults, "img2img", _inputs, prepare)
