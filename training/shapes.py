"""The synthetic picture world the embedded model is trained on: coloured shapes with captions.

Everything is a pure function of a seed, so the training data, the evaluation prompts and the
classifier's ground truth are reproducible without shipping any data set. Pictures are 64x64 RGB,
drawn at 4x and box-downsampled so edges are anti-aliased like a real decoder's output.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SIZE = 64
_SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (250, 230, 40),
    "orange": (245, 130, 20),
    "purple": (130, 50, 170),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
# 3x3 grid cells, named by (row, column); the name is what captions and the classifier use.
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0), "top": (0, 1), "top right": (0, 2),
    "left": (1, 0), "center": (1, 1), "right": (1, 2),
    "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2),
}
POSITION_PHRASES = {
    "center": "in the center", "left": "on the left", "right": "on the right",
    "top": "at the top", "bottom": "at the bottom",
    "top left": "in the top left corner", "top right": "in the top right corner",
    "bottom left": "in the bottom left corner", "bottom right": "in the bottom right corner",
}

# Nominal half-extent in pixels; each shape scales it so that all four have about the same area.
_SCALE = {"small": 8.0, "large": 12.0}
_GRID_OFFSET = 18.0  # pixels from the picture centre to a side cell's centre
_JITTER = 2.0
_STAR_INNER = 0.5  # inner/outer radius: a fat star survives 64 px and a 4x latent
STYLES = ("plain", "outline")
_OUTLINE = 0.35  # line width of the outline style, in units of a shape's scale (3-4 px)
# (left/right, up, down) extents of each shape in units of its scale, for keeping shapes inside.
_EXTENTS = {
    "circle": (1.0, 1.0, 1.0),
    "square": (0.9, 0.9, 0.9),
    "triangle": (1.3 * math.cos(math.radians(30)), 1.3, 0.65),
    "star": (1.3 * math.sin(math.radians(72)), 1.3, 1.3 * math.cos(math.radians(36))),
}


@dataclass(frozen=True)
class Item:
    """One drawn shape: its captioned attributes and the exact geometry (pixels) it was drawn with."""

    shape: str
    colour: str
    size: str
    position: str
    cx: float
    cy: float
    scale: float


@dataclass(frozen=True)
class Scene:
    """Ground truth of one picture: a background colour, a shape, and optionally a second shape."""

    background: str
    item: Item
    second: Item | None = None


def make_item(shape: str, colour: str, size: str, position: str, rng: random.Random) -> Item:
    """Place a shape in its grid cell with a little jitter, kept fully inside the picture."""
    row, col = POSITIONS[position]
    scale = _SCALE[size] * rng.uniform(0.94, 1.06)
    cx = SIZE / 2 + (col - 1) * _GRID_OFFSET + rng.uniform(-_JITTER, _JITTER)
    cy = SIZE / 2 + (row - 1) * _GRID_OFFSET + rng.uniform(-_JITTER, _JITTER)
    side, up, down = (e * scale for e in _EXTENTS[shape])
    cx = min(max(cx, 1 + side), SIZE - 1 - side)
    cy = min(max(cy, 1 + up), SIZE - 1 - down)
    return Item(shape, colour, size, position, cx, cy, scale)


def _radius(item: Item) -> float:
    return max(_EXTENTS[item.shape]) * item.scale


def sample_scene(rng: random.Random, two_shape_prob: float = 0.15) -> Scene:
    """A random scene: background, then one shape (or two non-overlapping ones) in other colours."""
    background = rng.choice(list(COLOURS))
    colours = [c for c in COLOURS if c != background]
    first = make_item(rng.choice(SHAPES), rng.choice(colours), rng.choice(SIZES), rng.choice(list(POSITIONS)), rng)
    if rng.random() >= two_shape_prob:
        return Scene(background, first)
    while True:
        second = make_item(
            rng.choice(SHAPES),
            rng.choice([c for c in colours if c != first.colour]),
            rng.choice(SIZES),
            rng.choice([p for p in POSITIONS if p != first.position]),
            rng,
        )
        if math.dist((first.cx, first.cy), (second.cx, second.cy)) > _radius(first) + _radius(second) + 1:
            return Scene(background, first, second)


def _polygon(item: Item) -> list[tuple[float, float]]:
    """Vertices (pixels) of a regular polygon or star centred on the item, pointing up."""
    if item.shape == "triangle":
        radii, count = [1.3 * item.scale], 3
    else:  # star
        radii, count = [1.3 * item.scale, 1.3 * item.scale * _STAR_INNER], 10
    points = []
    for k in range(count):
        angle = -math.pi / 2 + 2 * math.pi * k / count
        r = radii[k % len(radii)]
        points.append((item.cx + r * math.cos(angle), item.cy + r * math.sin(angle)))
    return points


def render(scene: Scene, style: str = "plain") -> Image.Image:
    """Draw the scene as a 64x64 RGB picture: shapes filled ("plain") or drawn as a thick line in their colour
    with the background inside ("outline", the style the easel-outline LoRA teaches)."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; one of {STYLES}")
    k = _SUPERSAMPLE
    img = Image.new("RGB", (SIZE * k, SIZE * k), COLOURS[scene.background])
    draw = ImageDraw.Draw(img)
    for item in (scene.item, scene.second):
        if item is None:
            continue
        colour = COLOURS[item.colour]
        paint = {"fill": colour} if style == "plain" else {"outline": colour, "width": round(_OUTLINE * item.scale * k)}
        if item.shape in ("circle", "square"):
            half = item.scale * (1.0 if item.shape == "circle" else 0.9)
            box = [(item.cx - half) * k, (item.cy - half) * k, (item.cx + half) * k - 1, (item.cy + half) * k - 1]
            (draw.ellipse if item.shape == "circle" else draw.rectangle)(box, **paint)
        else:
            draw.polygon([(x * k, y * k) for x, y in _polygon(item)], **paint)
    return img.resize((SIZE, SIZE), Image.Resampling.BOX)


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _single_captions(it: Item, bg: str) -> list[str]:
    pos = POSITION_PHRASES[it.position]
    full = [
        f"{_a(it.size)} {it.colour} {it.shape} {pos} on {_a(bg)} background",
        f"{it.size} {it.colour} {it.shape} {pos}, {bg} background",
        f"{_a(bg)} background with {_a(it.size)} {it.colour} {it.shape} {pos}",
    ]
    partial = [
        f"{_a(it.colour)} {it.shape} on {_a(bg)} background",
        f"{it.size} {it.colour} {it.shape} {pos}",
        f"{_a(it.colour)} {it.shape} {pos} on {_a(bg)} background",
    ]
    return full * 2 + partial  # full descriptions twice as often: prompts usually give everything


def _pair_captions(a: Item, b: Item, bg: str) -> list[str]:
    pa, pb = POSITION_PHRASES[a.position], POSITION_PHRASES[b.position]
    return [
        f"{_a(a.colour)} {a.shape} and {_a(b.colour)} {b.shape}",
        f"{_a(a.colour)} {a.shape} and {_a(b.colour)} {b.shape} on {_a(bg)} background",
        f"{_a(a.size)} {a.colour} {a.shape} {pa} and {_a(b.size)} {b.colour} {b.shape} {pb} on {_a(bg)} background",
    ]


def caption(scene: Scene, rng: random.Random) -> str:
    """One of several phrasings; every attribute a phrasing mentions is true of the scene."""
    if scene.second is None:
        return rng.choice(_single_captions(scene.item, scene.background))
    return rng.choice(_pair_captions(scene.item, scene.second, scene.background))


def full_caption(scene: Scene, phrasing: int = 0) -> str:
    """A caption naming every attribute of a single-shape scene (phrasing 0, 1 or 2)."""
    return _single_captions(scene.item, scene.background)[phrasing]


def example(seed: int, two_shape_prob: float = 0.15, style: str = "plain") -> tuple[Scene, str, Image.Image]:
    """The training example for ``seed``: scene, caption and picture (the style changes only the drawing)."""
    rng = random.Random(seed)
    scene = sample_scene(rng, two_shape_prob)
    return scene, caption(scene, rng), render(scene, style)
