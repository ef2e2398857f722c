"""The Extras tab's operations after the upscale (A1111's postprocessing scripts, which replaced its Train tab's
*Preprocess images*): split oversized pictures, crop to a focal point, crop to an automatically sized frame, and
add flipped copies. They prepare a training set: each picture becomes one or more at the size the upscale asked for.

The operations run in that order, each on every piece the ones before made (a split picture's pieces are each
flipped); a piece an operation makes only to be looked at (the focal crop's debug picture) is left alone after. The
*target* size is the upscale's: *Scale to*'s width and height, or the picture's size times *Scale by* (A1111's
``target_width``/``target_height``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageOps

FLIPS = ("Horizontal", "Vertical", "Both")
OBJECTIVES = ("Maximize area", "Minimize error")
SIZE_STEP = 64  # the auto-sized crop tries widths and heights this far apart, from the lower bound
ENTROPY_STRIDE = 4  # pixels between the frames the entropy search tries
DEBUG_TAG = "focal-crop-debug"


@dataclass(frozen=True)
class Piece:
    """A picture an operation made; ``tags`` go at the end of its file name (A1111's nametags); a ``final`` one is
    not processed further."""
    image: Image.Image
    tags: tuple[str, ...] = ()
    final: bool = False


Operation = Callable[[Piece], list[Piece]]


def apply(image: Image.Image, operations: Iterable[Operation]) -> list[Piece]:
    """``image`` through ``operations`` in turn: every piece, in order, each followed by the pieces made of it."""
    pieces = [Piece(image)]
    for operation in operations:
        pieces = [made for piece in pieces for made in ([piece] if piece.final else operation(piece))]
    return pieces


def split_oversized(target: tuple[int, int], threshold: float, overlap: float) -> Operation:
    """A picture much longer than the target's shape (its aspect over the target's, or the other way round, at most
    ``threshold``) scaled to the target's width (or height, lying down) and cut along its length into frames of the
    target's size, ``overlap`` of a frame shared by neighbours. A1111's Preprocess rule; its Extras script since 1.7
    splits whatever is longer than the target, whatever the threshold."""
    width, height = target

    def split(piece: Piece) -> list[Piece]:
        image = piece.image
        across = image.width >= image.height  # lying down: cut along x
        ratio = (image.height * width) / (image.width * height) if across else \
            (image.width * height) / (image.height * width)
        if ratio >= 1.0 or ratio > threshold:
            return [piece]
        short, frame = (height, width) if across else (width, height)
        length = round((image.width if across else image.height) * short / (image.height if across else image.width))
        image = image.resize((length, short) if across else (short, length), Image.LANCZOS)
        count = max(2, math.ceil((length - frame * overlap) / (frame * (1.0 - overlap))))
        starts = [round((length - frame) * index / (count - 1)) for index in range(count)]
        boxes = [(start, 0, start + frame, short) if across else (0, start, short, start + frame) for start in starts]
        return [Piece(image.crop(box), piece.tags) for box in boxes]
    return split


def focal_crop(target: tuple[int, int], entropy_weight: float, edges_weight: float, debug: bool) -> Operation:
    """The frame of the target's size around the picture's focal point, the picture first scaled to just cover it.
    The focal point weighs the centre of its corners (edge features, as OpenCV finds them for tracking) by
    ``edges_weight`` against the centre of its busiest frame (the most entropy along its length) by
    ``entropy_weight``. With ``debug``, the scaled picture with the points and the frame drawn on it follows."""
    width, height = target

    def crop(piece: Piece) -> list[Piece]:
        scale = max(width / piece.image.width, height / piece.image.height)
        image = piece.image.resize((max(width, round(piece.image.width * scale)),
                                    max(height, round(piece.image.height * scale))), Image.LANCZOS)
        points = [(point, weight, colour) for point, weight, colour in (
            (_corner_centre(image), edges_weight, "#00f"), (_busiest_centre(image, target), entropy_weight, "#ff0"))
            if point is not None and weight > 0]
        total = sum(weight for _, weight, _ in points)
        x, y = ((sum(p[0] * w for p, w, _ in points) / total, sum(p[1] * w for p, w, _ in points) / total) if total
                else (image.width / 2, image.height / 2))
        left = min(max(0, round(x - width / 2)), image.width - width)
        top = min(max(0, round(y - height / 2)), image.height - height)
        box = (left, top, left + width, top + height)
        made = [Piece(image.crop(box), piece.tags)]
        if debug:
            made.append(Piece(_annotated(image, box, points, (x, y)), (*piece.tags, DEBUG_TAG), final=True))
        return made
    return crop


def _corner_centre(image: Image.Image) -> tuple[float, float] | None:
    """The mean of the picture's strongest corners; the bottom tenth is hidden first, where watermarks sit."""
    grey = np.asarray(image.convert("L")).copy()
    grey[int(grey.shape[0] * 0.9):] = 153
    corners = cv2.goodFeaturesToTrack(grey, maxCorners=100, qualityLevel=0.04,
                                      minDistance=min(grey.shape) * 0.06, useHarrisDetector=False)
    if corners is None:
        return None
    x, y = corners.reshape(-1, 2).mean(axis=0)
    return float(x), float(y)


def _busiest_centre(image: Image.Image, target: tuple[int, int]) -> tuple[float, float] | None:
    """The centre of the target-sized frame with the most entropy (of its grey levels), tried every few pixels
    along the picture's length (the middle one of frames that tie: each holding the whole subject); none for a
    picture with no length to search."""
    grey = np.asarray(image.convert("L"))
    width, height = target
    along_x = image.width - width >= image.height - height
    room = image.width - width if along_x else image.height - height
    if room <= 0:
        return None
    starts = np.arange(0, room + 1, ENTROPY_STRIDE)
    scores = np.array([_entropy(grey[:, start:start + width] if along_x else grey[start:start + height])
                       for start in starts])
    best = float(starts[scores >= scores.max() - 1e-9].mean())
    return (best + width / 2, height / 2) if along_x else (width / 2, best + height / 2)


def _entropy(grey: np.ndarray) -> float:
    counts = np.bincount(grey.ravel(), minlength=256)
    share = counts[counts > 0] / grey.size
    return float(-(share * np.log2(share)).sum())


def _annotated(image: Image.Image, box, points, focus: tuple[float, float]) -> Image.Image:
    """The debug picture: the corners' centre in blue and the busiest frame's in yellow, each circle sized by its
    weight, the focal point and the frame in green."""
    shown = image.convert("RGB")
    draw = ImageDraw.Draw(shown)
    radius = min(image.size) * 0.035
    for (x, y), weight, colour in points:
        r = radius * max(weight, 0.2) * 2
        draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=2)
    x, y = focus
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline="#0f0", width=2)
    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline="#0f0", width=2)
    return shown


def autosized_crop(lower: int, upper: int, least_area: int, most_area: int, objective: str, threshold: float,
                   notes: list[str]) -> Operation:
    """The picture cut from its middle to the width and height (``lower``..``upper``, every 64 pixels; area in
    ``least_area``..``most_area``) whose shape is closest to its own within ``threshold`` (1 - the smaller ratio
    of the two aspects), the largest such area (``Maximize area``) or the closest shape (``Minimize error``), and
    scaled to it. A picture no size fits is left as it is, with a note."""
    sizes = [(w, h) for w in range(lower, upper + 1, SIZE_STEP) for h in range(lower, upper + 1, SIZE_STEP)
             if least_area <= w * h <= most_area]

    def crop(piece: Piece) -> list[Piece]:
        image = piece.image
        aspect = image.width / image.height

        def error(size):
            ratio = aspect / (size[0] / size[1])
            return 1 - min(ratio, 1 / ratio)

        fitting = [size for size in sizes if error(size) <= threshold]
        if not fitting:
            notes.append(f"Auto-sized crop left a {image.width}x{image.height} picture as it is: no size within the "
                         "bounds has its shape within the error threshold.")
            return [piece]
        by_area = objective == OBJECTIVES[0]
        size = max(fitting, key=lambda s: (s[0] * s[1], -error(s)) if by_area else (-error(s), s[0] * s[1]))
        return [Piece(ImageOps.fit(image, size, Image.LANCZOS), piece.tags)]
    return crop


def flipped_copies(flips: Iterable[str]) -> Operation:
    """The piece, then a mirrored copy for each flip asked for (left-right, top-bottom, both)."""
    chosen = [flip for flip in FLIPS if flip in flips]

    def flip(piece: Piece) -> list[Piece]:
        image = piece.image
        made = {"Horizontal": ImageOps.mirror, "Vertical": ImageOps.flip,
                "Both": lambda picture: ImageOps.flip(ImageOps.mirror(picture))}
        return [piece, *(Piece(made[name](image), piece.tags) for name in chosen)]
    return flip
