"""A1111's X/Y/Z plot panel (``pipelines/xyz.py``): in every generation tab, ticked like its other scripts, and in
the Compare tab, where a button of its own runs it. Its values are read by ``xyz.from_values``."""

from __future__ import annotations

import gradio as gr

from pipelines.grid import MAX_MARGIN
from pipelines.xyz import AXES

from .common import FieldSet

# A1111's options, under its labels: (name, label, value)
FLAGS = (("legend", "Draw legend", True), ("keep_random", "Keep -1 for seeds", False),
         ("vary_x", "Vary seeds for X", False), ("vary_y", "Vary seeds for Y", False),
         ("vary_z", "Vary seeds for Z", False), ("sub_images", "Include Sub Images", False),
         ("sub_grids", "Include Sub Grids", False))


def controls(fields: FieldSet, toggle: bool = True) -> None:
    """The axes (type and values) and A1111's options; with ``toggle`` the box that turns the plot on."""
    p = fields.prefix
    if toggle:
        fields.add("xyz", gr.Checkbox(False, label="X/Y/Z plot: a picture for every combination of the axes' values "
                                                   "(the model picked at the top unless an axis names models)",
                                      elem_id=f"{p}_xyz"))
    for letter, axis, text in zip("xyz", ("Steps", "Nothing", "Nothing"), ("10, 20, 30", "", "")):
        with gr.Row():
            fields.add(f"xyz_{letter}_type", gr.Dropdown(list(AXES), value=axis, label=f"{letter.upper()} type",
                                                         scale=1, elem_id=f"{p}_xyz_{letter}_type"))
            fields.add(f"xyz_{letter}_values", gr.Textbox(text, label=f"{letter.upper()} values", scale=3,
                                                          elem_id=f"{p}_xyz_{letter}_values"))
    with gr.Row():
        for name, label, value in FLAGS:
            fields.add(f"xyz_{name}", gr.Checkbox(value, label=label, elem_id=f"{p}_xyz_{name}"))
    fields.add("xyz_margin", gr.Slider(0, MAX_MARGIN, value=0, step=2, label="Grid margins (px)",
                                       elem_id=f"{p}_xyz_margin"))
