"""A1111's two img2img scripts that chain passes inside one job, and their arithmetic (the engine runs the passes:
``Engine._loopback``, ``Engine._sd_upscale``).

- **Loopback**: each picture is the next loop's init image; the denoising strength goes from the tab's to the
  final one along a curve (A1111's: *Linear* evenly, *Aggressive* early, as a sine, *Lazy* late, as one minus a
  cosine). A batch is a chain of loops, one picture each; loop i of chain n takes seed + n x loops + i (A1111 moves
  the seed on by one a loop, across chains). In inpainting, later loops keep the masked content as it is
  (A1111's "original"), since the mask now holds the last loop's painting. A job of several pictures gets A1111's
  grid of its history, one row: every loop's picture when there is one chain, each chain's last when there are
  several (``loopback_history``; ``job_plan.grids`` draws it).
- **SD upscale**: the init picture is upscaled by a factor (``None``: kept as it is), cut into tiles of the tab's
  width and height that overlap by at least *Tile overlap* pixels (spread evenly, the last one flush with the
  edge), and every tile is repainted by img2img (batch size tiles a pass); the tiles are blended back with weights
  that ramp over the overlap, so no seam shows. Picture n of the batch count takes seed + n and its tile k seed +
  n + k (A1111's, for a batch size of 1). A tile that was not repainted (an interrupt) keeps the upscaled pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

MAX_LOOPS = 32
MAX_OVERLAP = 256
MAX_SCALE = 4.0

_CURVE_SHAPES = {  # how far along a loop's strength is, from the progress through the loops (both 0 to 1)
    "Aggressive": lambda progress: math.sin(progress * math.pi / 2),
    "Linear": lambda progress: progress,
    "Lazy": lambda progress: 1 - math.cos(progress * math.pi / 2),
}
CURVES = tuple(_CURVE_SHAPES)  # A1111's order


def loopback_strengths(first: float, final: float, loops: int, curve: str) -> list[float]:
    """Each loop's denoising strength: ``first`` for the first loop, ``final`` for the last, ``curve`` between."""
    if loops == 1:
        return [first]
    shape = _CURVE_SHAPES[curve]
    return [round(first + (final - first) * shape(loop / (loops - 1)), 4) for loop in range(loops)]


def loopback_history(offsets: list[int], loops: int, strengths: list[float]) -> list[tuple[int, str]]:
    """The pictures a Loopback job's grid shows, with their labels, from each picture's seed offset from the job's
    seed (loop i of chain n: n x loops + i)."""
    chains: dict[int, list[int]] = {}
    for index, offset in enumerate(offsets):
        chains.setdefault(offset // loops, []).append(index)
    if len(chains) == 1:
        [indices] = chains.values()
        return [(index, f"Loop {loop + 1}: {strengths[loop]}") for index in indices
                for loop in [offsets[index] % loops]]
    return [(indices[-1], f"Chain {chain + 1}") for chain, indices in chains.items()]


def _starts(length: int, side: int, overlap: int) -> list[int]:
    """Where tiles of ``side`` start along ``length``: as few as overlap by ``overlap`` or more, evenly spread."""
    if length <= side:
        return [0]
    count = math.ceil((length - overlap) / (side - overlap))
    return [round(index * (length - side) / (count - 1)) for index in range(count)]


def _ramp(side: int, overlap: int, rising: bool, falling: bool) -> np.ndarray:
    """A tile's weights along one side: rising over its first ``overlap`` pixels where a neighbour overlaps it
    there, falling over its last where one overlaps it there; never 0, so every pixel has a weight."""
    weights = np.ones(side, dtype=np.float32)
    if overlap:
        edge = np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1)
        if rising:
            weights[:overlap] = np.minimum(weights[:overlap], edge)
        if falling:
            weights[-overlap:] = np.minimum(weights[-overlap:], edge[::-1])
    return weights


@dataclass(frozen=True)
class Tiles:
    """The tiles covering a picture of ``size``, row by row (their top-left corners in ``corners``)."""

    size: tuple[int, int]
    tile: tuple[int, int]
    overlap: int
    corners: tuple[tuple[int, int], ...]

    @classmethod
    def cover(cls, size: tuple[int, int], tile: tuple[int, int], overlap: int) -> "Tiles":
        xs, ys = (_starts(size[axis], tile[axis], overlap) for axis in (0, 1))
        return cls(size, tile, overlap, tuple((x, y) for y in ys for x in xs))

    def crops(self, picture: Image.Image) -> list[Image.Image]:
        width, height = self.tile
        return [picture.crop((x, y, x + width, y + height)) for x, y in self.corners]

    def combine(self, pictures: list[Image.Image]) -> Image.Image:
        """One picture of ``size`` from a picture per tile, blended where tiles overlap."""
        width, height = self.tile
        total = np.zeros((self.size[1], self.size[0], 3), dtype=np.float32)
        weight = np.zeros((self.size[1], self.size[0], 1), dtype=np.float32)
        for (x, y), picture in zip(self.corners, pictures, strict=True):
            across = _ramp(width, self.overlap, x > 0, x + width < self.size[0])
            down = _ramp(height, self.overlap, y > 0, y + height < self.size[1])
            share = (down[:, None] * across[None, :])[..., None]
            pixels = np.asarray(picture.convert("RGB").resize(self.tile), dtype=np.float32)
            total[y:y + height, x:x + width] += pixels * share
            weight[y:y + height, x:x + width] += share
        return Image.fromarray(np.clip(np.rint(total / weight), 0, 255).astype(np.uint8))
