"""A1111's Sketch (img2img) and Inpaint sketch: the editors' paint as a mask and as the start's colours, and what
the embedded model makes of a sketch (the paint decides where and what colour)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.engine import Engine
from pipelines.errors import RequestError
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest
from training.classify import classify
from ui import img2img, inpaint
from ui.editor import editor_value, paint_mask, painted

ROOT = Path(__file__).resolve().parent.parent
GREEN, BLUE = (40, 170, 60), (40, 80, 220)  # the embedded model's green and blue (training/shapes.py)
BASE = {"prompt": "a large circle on a white background", "model": "easel-shapes", "width": 64, "height": 64,
        "steps": 20, "sampler": "Euler a"}


def paint(colour: tuple[int, int, int], box: tuple[int, int, int, int], alpha: int = 255) -> Image.Image:
    """A paint layer as Gradio's editor gives it: transparent but for a disc of ``colour``."""
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(layer).ellipse(box, fill=(*colour, alpha))
    return layer


def white() -> Image.Image:
    return Image.new("RGB", (64, 64), "white")


def test_the_paint_of_any_colour_is_the_mask_at_the_pictures_size():
    editor = {"background": Image.new("RGB", (128, 128), "gray"),
              "layers": [paint(GREEN, (0, 0, 15, 15)), paint((255, 255, 255), (48, 48, 63, 63), alpha=40)]}
    mask = np.asarray(paint_mask(editor))
    assert mask.shape == (128, 128) and set(np.unique(mask)) == {0, 255}  # any paint, however faint, repaints
    assert mask[10, 10] == mask[110, 110] == 255 and mask[64, 64] == 0
    assert paint_mask(editor_value(white())) is None and paint_mask(None) is None
    assert paint_mask({"background": white(), "layers": [Image.new("RGBA", (64, 64))]}) is None  # nothing painted


def test_the_picture_with_its_paint_on_at_an_opacity():
    editor = {"background": white(), "layers": [paint(BLUE, (16, 16, 47, 47))]}
    assert np.asarray(painted(editor))[32, 32].tolist() == list(BLUE)
    assert np.asarray(painted(editor))[2, 2].tolist() == [255, 255, 255]
    half = np.asarray(painted(editor, 0.5))[32, 32].astype(int)
    assert np.abs(half - (np.array(BLUE) + 255) / 2).max() <= 1
    assert painted(editor, 0.0).tobytes() == white().tobytes()
    assert painted({"layers": [paint(BLUE, (0, 0, 9, 9))]}) is None  # no picture


def test_img2img_starts_from_the_sketch_which_a_folder_overrides(tmp_path):
    sketch = {"background": Image.new("RGB", (96, 64), "white"), "layers": [paint(GREEN, (0, 0, 20, 20))]}
    values = img2img.prepare({**BASE, "init_image": Image.new("RGB", (64, 64), "red"), "sketch": sketch,
                              "size_from": 1, "scale_by": 1.0})
    assert values["init_image"].tobytes() == painted(sketch).tobytes() and "sketch" not in values
    assert (values["width"], values["height"]) == (96, 64)  # "Resize by" follows the sketch's picture
    white().save(tmp_path / "a.png")
    batch = img2img.prepare({**BASE, "sketch": sketch, "batch_files": [str(tmp_path / "a.png")]})
    assert len(batch) == 1 and batch[0]["init_image"].tobytes() == white().tobytes() and "sketch" not in batch[0]


def test_inpaint_sketch_starts_from_the_paint_at_one_minus_its_transparency():
    editor = {"background": white(), "layers": [paint(BLUE, (16, 16, 47, 47))]}
    plain = inpaint.prepare({**BASE, "editor": editor, "inpaint_sketch": False, "mask_alpha": 0})
    sketch = inpaint.prepare({**BASE, "editor": editor, "inpaint_sketch": True, "mask_alpha": 0})
    faint = inpaint.prepare({**BASE, "editor": editor, "inpaint_sketch": True, "mask_alpha": 75})
    assert plain["init_image"].tobytes() == white().tobytes()
    assert sketch["init_image"].tobytes() == painted(editor).tobytes()
    assert faint["init_image"].tobytes() == painted(editor, 0.25).tobytes()
    assert plain["mask"].tobytes() == sketch["mask"].tobytes() == faint["mask"].tobytes() == \
        paint_mask(editor).tobytes()  # the paint is the mask however transparent
    with pytest.raises(RequestError) as refused:
        inpaint.prepare({**BASE, "editor": editor, "inpaint_sketch": True, "mask_alpha": 150})
    assert refused.value.field == "mask_alpha" and "0 to 100" in str(refused.value)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(Registry(ROOT / "models"), OutputWriter(tmp_path_factory.mktemp("out")))


def run(engine, values: dict, task: str):
    request = GenerationRequest.from_values({**BASE, "seed": 0, "denoising_strength": 0.6, **values, "task": task})
    return classify(engine.generate(request).images[0])


def test_a_sketch_decides_where_and_what_colour_the_prompt_leaves_open(engine):
    """"a large circle": txt2img draws an orange one at the bottom; a green blob sketched in the top left corner
    makes a green circle there."""
    unsketched = run(engine, {}, "txt2img")
    assert unsketched.position != "top left" and unsketched.colour != "green", unsketched
    sketch = {"background": white(), "layers": [paint(GREEN, (4, 4, 26, 26))]}
    drawn = run(engine, img2img.prepare({"sketch": sketch}), "img2img")
    assert (drawn.colour, drawn.shape, drawn.position, drawn.background) == ("green", "circle", "top left", "white")


def test_inpaint_sketch_repaints_the_painted_part_from_its_colours(engine):
    """A red circle painted over in blue: inpaint sketch makes it a blue circle; the same paint as a plain mask
    keeps the masked content and does not."""
    circle = engine.generate(GenerationRequest.from_values({**BASE, "seed": 1, "task": "txt2img",
                                                           "prompt": "a large red circle in the center on a "
                                                                     "white background"})).images[0]
    editor = {"background": circle, "layers": [paint(BLUE, (16, 16, 48, 48))]}
    outcomes = {}
    for sketch in (True, False):
        values = inpaint.prepare({"editor": editor, "inpaint_sketch": sketch, "mask_alpha": 0})
        outcomes[sketch] = run(engine, {**values, "denoising_strength": 0.5}, "inpaint")
    assert (outcomes[True].colour, outcomes[True].shape, outcomes[True].position) == ("blue", "circle", "center")
    assert outcomes[False].colour != "blue", outcomes[False]
