"""A deterministic pixel classifier for single-shape pictures, used to score the embedded model.

No learned parts, so its verdicts mean the same thing for every model: the background is the
named colour most pixels are nearest to (a shape covers at most an eighth of the picture, and
unlike the border alone this survives a decoder's edge artefacts), the shape is what differs
from it, its colour is the nearest named colour, its kind comes from the geometry of its mask,
its position from the centroid on a 3x3 grid. Numpy only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.shapes import COLOURS, POSITIONS

_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[n] for n in _NAMES], dtype=np.float64)
_CELL = {cell: name for name, cell in POSITIONS.items()}
_ROUGH_DISTANCE = 48.0  # RGB distance from the background that surely is foreground
_MIN_AREA = 6
# Area of each shape in units of its scale squared (see shapes.py), to tell small from large.
_AREA_PER_SCALE2 = {"circle": np.pi, "square": 1.8**2, "triangle": 2.195, "star": 2.483}
_SIZE_SPLIT = 10.0  # scale between small (8) and large (12)


@dataclass(frozen=True)
class Prediction:
    """What the classifier sees; attributes are None when no foreground shape was found."""

    background: str
    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None


def nearest_labels(rgb: np.ndarray) -> np.ndarray:
    """Index of the nearest named colour for every pixel (or colour) in ``rgb`` (..., 3)."""
    return ((rgb[..., None, :] - _PALETTE) ** 2).sum(axis=-1).argmin(axis=-1)


def nearest_colour(rgb: np.ndarray) -> str:
    return _NAMES[int(nearest_labels(rgb))]


def patches(image: Image.Image, colour: str, least: int = 8) -> int:
    """How many separate patches of ``colour`` (by each pixel's nearest named colour; 8-connected, of ``least``
    pixels or more) a picture has: one for a shape drawn once, several for a shape repeated."""
    from scipy import ndimage

    labels = nearest_labels(np.asarray(image.convert("RGB"), dtype=np.float64))
    found, count = ndimage.label(labels == _NAMES.index(colour), structure=np.ones((3, 3)))
    return int((np.bincount(found.ravel(), minlength=count + 1)[1:] >= least).sum())


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of ``mask``."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        region, queue = [], deque([(y0, x0)])
        while queue:
            y, x = queue.popleft()
            region.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(region) > len(best):
            best = region
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def _hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of the mask's pixel squares (monotone chain + shoelace)."""
    points = set()
    for y in np.nonzero(mask.any(axis=1))[0]:
        xs = np.nonzero(mask[y])[0]
        for x in (xs[0], xs[-1] + 1):
            points.update({(float(x), float(y)), (float(x), float(y + 1))})
    pts = sorted(points)

    def half(seq):
        chain: list[tuple[float, float]] = []
        for p in seq:
            while len(chain) >= 2:
                (ax, ay), (bx, by) = chain[-2], chain[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                chain.pop()
            chain.append(p)
        return chain[:-1]

    hull = half(pts) + half(reversed(pts))
    xs, ys = np.array([p[0] for p in hull]), np.array([p[1] for p in hull])
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def shape_of(mask: np.ndarray) -> str:
    """Star if far from convex; else by how much of its bounding box it fills."""
    ys, xs = np.nonzero(mask)
    area = float(len(ys))
    fill = area / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    solidity = area / _hull_area(mask)
    if solidity < 0.8:
        return "star"
    if fill > 0.9:
        return "square"
    if fill > 0.64:
        return "circle"
    return "triangle"


def position_of(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    row = min(int(3 * (ys.mean() + 0.5) / h), 2)
    col = min(int(3 * (xs.mean() + 0.5) / w), 2)
    return _CELL[(row, col)]


def _segment(image: Image.Image | np.ndarray) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """(background name, the shape's colour, the shape's mask), the last two None when no shape is found."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    labels = nearest_labels(rgb)
    majority = int(np.bincount(labels.ravel(), minlength=len(_NAMES)).argmax())
    background = _NAMES[majority]
    bg = np.median(rgb[labels == majority], axis=0)
    rough = _largest_component(np.linalg.norm(rgb - bg, axis=2) > _ROUGH_DISTANCE)
    if rough.sum() < _MIN_AREA:
        return background, None, None
    fg = np.median(rgb[rough], axis=0)
    # A pixel belongs to the shape when it is nearer the shape's colour than the background's,
    # measured along the line between them: anti-aliased edges split at half coverage.
    direction = fg - bg
    coverage = ((rgb - bg) @ direction) / max(float(direction @ direction), 1e-6)
    mask = _largest_component(coverage > 0.5)
    return (background, fg, mask) if mask.sum() >= _MIN_AREA else (background, None, None)


def hollowness(image: Image.Image | np.ndarray) -> float:
    """The style metric of the outline LoRA: the share of a shape's outer area that is background enclosed by
    it. About 0 for filled shapes; 0.2-0.6 for the outline style (``shapes.render(style="outline")``)."""
    _, _, mask = _segment(image)
    if mask is None:
        return 0.0
    framed = np.pad(~mask, 1, constant_values=True)  # a frame joins all background that reaches the border
    enclosed = ~mask & ~_largest_component(framed)[1:-1, 1:-1]
    return float(enclosed.sum() / (enclosed.sum() + mask.sum()))


def classify(image: Image.Image | np.ndarray) -> Prediction:
    """Read background, colour, shape, size and position off a single-shape picture."""
    background, fg, mask = _segment(image)
    if mask is None:
        return Prediction(background)
    shape = shape_of(mask)
    scale = np.sqrt(mask.sum() / _AREA_PER_SCALE2[shape])
    return Prediction(
        background=background,
        colour=nearest_colour(fg),
        shape=shape,
        size="large" if scale > _SIZE_SPLIT else "small",
        position=position_of(mask),
    )
