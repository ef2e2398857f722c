"""The inpaint tab: paint a mask over an image (or upload one) and repaint only that part, or outpaint.

The editor's paint becomes the mask here (in A1111's inpaint sketch the start's colours too: ``ui/editor.py``);
everything else about masks (size, blur, inversion, masked content, only-masked cropping, soft inpainting, composing
the original back) happens in the engine.
"""

from __future__ import annotations

import gradio as gr

from pipelines.errors import RequestError
from pipelines.request import MASKED_CONTENT
from pipelines.soft_inpainting import SETTINGS as SOFT_SETTINGS

from .common import FIT, FieldSet, GenerationTab, generation_tab, setting_slider
from .editor import paint_mask, painted, sketch_editor
from .img2img import resize_and_strength, sized

INPAINT_AREAS = ("Whole picture", "Only masked")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
OUTPAINT_SIDES = ("left", "right", "up", "down")  # the order of the request's outpaint margins


def _inputs(fields: FieldSet) -> dict:
    editor = fields.add("editor", sketch_editor("Image and mask (paint over what to repaint)", "inpaint_editor", 420))
    with gr.Row():
        fields.add("inpaint_sketch", gr.Checkbox(False, label="Inpaint sketch", elem_id="inpaint_sketch",
                                                 info="start the repaint from the painted colours", scale=1))
        fields.add("mask_alpha", gr.Slider(0, 100, value=0, step=1, label="Mask transparency",
                                           info="of the paint, in inpaint sketch", elem_id="inpaint_mask_alpha",
                                           scale=2))
    with gr.Accordion("Upload a mask instead", open=False):
        fields.add("mask_upload", gr.Image(label="Mask (white repaints)", type="pil", sources=["upload"],
                                           elem_id="inpaint_mask_upload", height=200, elem_classes=FIT))
    fields.add("mask_blur", gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="inpaint_mask_blur"))
    with gr.Row():
        fields.add("inpainting_mask_invert", gr.Radio(list(MASK_MODES), value=MASK_MODES[0], type="index",
                                                      label="Mask mode", elem_id="inpaint_mask_mode"))
        fields.add("inpainting_fill", gr.Radio(list(MASKED_CONTENT), value=MASKED_CONTENT[1], type="index",
                                               label="Masked content", elem_id="inpaint_masked_content"))
    with gr.Row():
        fields.add("inpaint_full_res", gr.Radio(list(INPAINT_AREAS), value=INPAINT_AREAS[0], type="index",
                                                label="Inpaint area", elem_id="inpaint_area"))
        fields.add("inpaint_full_res_padding", gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                                         elem_id="inpaint_padding"))
    with gr.Accordion("Soft inpainting", open=False, elem_id="soft_inpainting"):  # A1111's, under its labels
        fields.add("soft_inpainting", gr.Checkbox(False, label="Soft inpainting", elem_id="soft_inpainting_enabled",
                                                  info="blend new content by the mask's grey levels: a high mask "
                                                       "blur is recommended"))
        for setting in SOFT_SETTINGS:
            setting_slider(fields, setting, setting.field.replace("soft_", "soft_inpainting_"))
    with gr.Accordion("Outpaint: extend the canvas", open=False):
        with gr.Row():
            for side in OUTPAINT_SIDES:
                fields.add(f"outpaint_{side}", gr.Slider(0, 512, value=0, step=8, label=f"Pixels {side}",
                                                         elem_id=f"inpaint_outpaint_{side}"))
    resize_and_strength(fields)
    return {"editor": editor}


def prepare(values: dict) -> dict:
    """Editor, optional uploaded mask and outpaint margins -> the request's init image, mask and outpaint. In
    inpaint sketch (A1111's) the init image has the paint on it, at 1 - the mask transparency."""
    editor = values.pop("editor", None) or {}
    uploaded = values.pop("mask_upload", None)
    sketch, transparency = values.pop("inpaint_sketch", False), values.pop("mask_alpha", 0) or 0
    if not 0 <= transparency <= 100:
        raise RequestError(f"Mask transparency is a percentage, 0 to 100, not {transparency}.", "mask_alpha")
    outpaint = tuple(values.pop(f"outpaint_{side}", 0) for side in OUTPAINT_SIDES)
    image = painted(editor, 1 - transparency / 100) if sketch else editor.get("background")
    if image is None:
        raise RequestError("Upload an image to inpaint.")
    mask = uploaded if uploaded is not None else paint_mask(editor)
    return sized({**values, "init_image": image, "mask": mask, "outpaint": outpaint})


def build(services, model: gr.Dropdown, defaults: dict) -> GenerationTab:
    return generation_tab(services, model, defaults, "inpaint", _inputs, prepare)
