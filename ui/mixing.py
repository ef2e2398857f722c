"""txt2img's "Image mixing" panel (Kandinsky 2.2 only): the prompt, two pictures and a second prompt, each with
a weight, blended by the model's prior. Shown only while a Kandinsky 2.2 model is picked.

Its widgets are fields named ``mix_*``; ``collect`` turns them into the request's ``mix`` (the items the REST
API's ``mix`` sends), leaving out empty slots.
"""

from __future__ import annotations

import gradio as gr

from pipelines.errors import EaselError
from pipelines.kandinsky import FAMILY

from .common import FIT, FieldSet

PICTURES = 2


def build(fields: FieldSet, visible: bool) -> gr.Accordion:
    p = fields.prefix
    weight = lambda name, value, label="Weight": fields.add(name, gr.Slider(  # noqa: E731
        0.0, 1.0, value=value, step=0.05, label=label, elem_id=f"{p}_{name}"))
    with gr.Accordion("Image mixing", open=False, visible=visible, elem_id=f"{p}_mixing") as panel:
        fields.add("mix_enabled", gr.Checkbox(False, label="Mix the prompt with pictures and another prompt",
                                              elem_id=f"{p}_mix_enabled"))
        weight("mix_prompt_weight", 0.5, "Prompt weight")
        with gr.Row():
            for i in range(1, PICTURES + 1):
                with gr.Column():
                    fields.add(f"mix_image_{i}", gr.Image(label=f"Picture {i}", type="pil", height=160,
                                                          elem_id=f"{p}_mix_image_{i}", elem_classes=FIT))
                    weight(f"mix_image_{i}_weight", 0.5)
        with gr.Row():
            fields.add("mix_prompt_2", gr.Textbox("", label="Second prompt", elem_id=f"{p}_mix_prompt_2", scale=3))
            weight("mix_prompt_2_weight", 0.5)
    return panel


def collect(values: dict) -> dict:
    """The widget values with ``mix`` filled (when enabled) from the prompt and the filled slots."""
    if not values.get("mix_enabled"):
        return values
    slots = [("prompt", values.get("prompt"), values.get("mix_prompt_weight")),
             *[("image", values.get(f"mix_image_{i}"), values.get(f"mix_image_{i}_weight"))
               for i in range(1, PICTURES + 1)],
             ("prompt", values.get("mix_prompt_2"), values.get("mix_prompt_2_weight"))]
    mix = [{kind: value, "weight": weight} for kind, value, weight in slots
           if value is not None and (kind == "image" or str(value).strip())]
    return {**values, "mix": mix or [{}]}  # nothing to mix: the request says what is missing


def is_mixing_model(registry, name: str | None) -> bool:
    try:
        return bool(name) and registry.resolve(name).family == FAMILY
    except EaselError:  # a typed name that is not a model
        return False


def wire_visibility(registry, model: gr.Dropdown, panel: gr.Accordion) -> None:
    """Show the panel while a Kandinsky 2.2 model is picked."""
    model.change(lambda name: gr.update(visible=is_mixing_model(registry, name)), model, panel,
                 api_visibility="private")
