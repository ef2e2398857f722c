"""What the image editors hold, as pictures: the paint as a mask, the picture with the paint on it.

Gradio's ImageEditor gives the uploaded picture (``background``) and the paint (``layers``, transparent where
nothing is painted). The inpaint tab's paint is its mask; A1111's Sketch (img2img) starts from the picture with
the paint on it, and its Inpaint sketch repaints where the paint is, starting from the painted colours.
"""

from __future__ import annotations

import gradio as gr
from PIL import Image

# The brush's colours: white first (a mask's colour, and A1111's sketch default), then a few to sketch with.
COLOURS = ["#ffffff", "#000000", "#ff0000", "#ff8800", "#ffff00", "#00aa00", "#0000ff", "#8800ff"]


def sketch_editor(label: str, elem_id: str, height: int) -> gr.ImageEditor:
    """An editor to paint on a picture with the palette's colours (or any, from its picker)."""
    return gr.ImageEditor(label=label, type="pil", sources=["upload", "clipboard"], layers=False, transforms=(),
                          brush=gr.Brush(colors=COLOURS, default_color=COLOURS[0]),
                          elem_id=elem_id, height=height, format="png")


def editor_value(image: Image.Image | None) -> dict | None:
    """An editor holding ``image`` and no paint (what "Send to inpaint" and "Sketch over it" put there)."""
    return None if image is None else {"background": image, "layers": [], "composite": image}


def _layers(editor: dict | None) -> list[Image.Image]:
    """The paint layers, RGBA, at the picture's size (the first layer's without a picture)."""
    layers = [layer.convert("RGBA") for layer in (editor or {}).get("layers") or [] if layer is not None]
    background = (editor or {}).get("background")
    size = background.size if background is not None else layers[0].size if layers else None
    return [layer if layer.size == size else layer.resize(size, Image.NEAREST) for layer in layers]


def paint_mask(editor: dict | None) -> Image.Image | None:
    """Every painted pixel of the editor's layers, any colour, as one L mask (white = painted); None if nothing is
    painted."""
    layers = _layers(editor)
    if not layers:
        return None
    mask = Image.new("L", layers[0].size, 0)
    for layer in layers:
        mask.paste(255, (0, 0), layer.getchannel("A").point(lambda a: 255 if a > 0 else 0))
    return mask if mask.getbbox() else None


def painted(editor: dict | None, opacity: float = 1.0) -> Image.Image | None:
    """The editor's picture with its paint laid on at ``opacity`` (A1111's inpaint sketch's 1 - mask
    transparency); None without a picture."""
    background = (editor or {}).get("background")
    if background is None:
        return None
    picture = background.convert("RGBA")
    for layer in _layers(editor):
        if opacity < 1:
            layer.putalpha(layer.getchannel("A").point(lambda a: round(a * opacity)))
        picture = Image.alpha_composite(picture, layer)
    return picture.convert("RGB")
