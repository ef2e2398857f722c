"""Tiled Diffusion (the multidiffusion-upscaler extension for A1111, ComfyUI's TiledDiffusion node): each UNet call
on a large picture is made on overlapping tiles of its latents, a few tiles to a batch, and the tiles' predictions
are averaged where they overlap, so a picture far larger than the model was trained at keeps the detail of its
training size, with the memory of a tile's call, and no seams (every step blends the tiles again).

*MultiDiffusion* (Bar-Tal et al., 2023) averages the overlapping predictions evenly; *Mixture of Diffusers*
(Jiménez, 2023) weighs each tile's by a Gaussian around its centre, so a tile's edge counts least. The grid is the
extension's: as few tiles as cover the latents with at least the overlap between them, spread evenly, the last
flush with the far edge; latents that fit one tile are not tiled, and the infotext notes the extension's settings
only when a pass was (``conditioning.StepConditioning.ran``), as the extension writes them only then.

``composable.ComposedUNet`` makes the calls (``tiles``, ``window``), so everything that rides on the UNet's inputs
works on tiles: CFG, composable prompts and Regional Prompter (each part's area cut to the tile), PAG, Rescale CFG,
NGMS and Skip Early CFG (on the blended prediction), ControlNet (its residuals, made once on the whole picture, cut
to the tile at each of their scales), IP-Adapter, inpainting UNets, hires fix's second pass and the refiner. SAG,
which reads the whole picture's attention map, is refused.

In img2img the extension's upscaler upscales the picture first (``TiledDiffusion.upscaled_size``; the engine runs
it), and the pass is made at that size.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import torch

from .script_settings import Setting
from .upscalers import NONE as NO_UPSCALER

KEY = "Tiled Diffusion"  # the infotext key: the settings as a dict, written as A1111 writes one (JSON)
METHODS = ("MultiDiffusion", "Mixture of Diffusers")
# The extension's sliders (their infotext keys are the dict's), whole numbers
NUMBERS = (
    Setting("td_tile_width", "Latent tile width", "Tile tile width", 96, 16, 256, 16, "latent pixels (8 px each)"),
    Setting("td_tile_height", "Latent tile height", "Tile tile height", 96, 16, 256, 16, "latent pixels"),
    Setting("td_overlap", "Latent tile overlap", "Tile Overlap", 48, 0, 256, 4, "at least this much between tiles"),
    Setting("td_batch_size", "Latent tile batch size", "Tile batch size", 4, 1, 8, 1, "tiles to a UNet call"),
)
# img2img's: the picture upscaled by the factor before the pass, from its own size (*Keep input image size*) or from
# the width and height
SCALE_FACTOR = Setting("td_scale_factor", "Scale Factor", "Upscale factor", 2.0, 1.0, 8.0, 0.05,
                       "img2img's picture upscaled this much first")
UPSCALE_FIELDS = ("td_upscaler", SCALE_FACTOR.field, "td_keep_input_size")
UPSCALE_KEYS = ("Upscaler", SCALE_FACTOR.key, "Keep input size")  # in the dict, the fields' order
FIELDS = ("tiled_diffusion", "td_method", *(number.field for number in NUMBERS), *UPSCALE_FIELDS)  # on, settings
# The dict's keys in the extension's earlier versions, and the flat keys of its first ones (the upscaler's stayed)
_OLD_KEYS = {"Latent tile width": "td_tile_width", "Latent tile height": "td_tile_height", "Overlap": "td_overlap",
             **{f"{KEY} {word}": field for word, field in (
                 ("method", "td_method"), ("tile width", "td_tile_width"), ("tile height", "td_tile_height"),
                 ("overlap", "td_overlap"), ("batch size", "td_batch_size"), ("upscaler", "td_upscaler"),
                 ("scale factor", SCALE_FACTOR.field))}}
FLAT_UPSCALE_KEYS = (f"{KEY} upscaler", f"{KEY} scale factor")  # what it writes beside the dict
# The UNet's inputs laid out on the latents' grid (at the latents' size or a fraction of it), cut to each tile:
# ControlNet's and T2I-Adapter's residuals (the sample itself is too)
SPATIAL = ("down_block_additional_residuals", "mid_block_additional_residual", "down_intrablock_additional_residuals")


class Tile(NamedTuple):
    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class TiledDiffusion:
    """The extension's settings, as a request holds them (checked there)."""

    method: str = METHODS[0]
    tile_width: int = NUMBERS[0].default
    tile_height: int = NUMBERS[1].default
    overlap: int = NUMBERS[2].default
    batch_size: int = NUMBERS[3].default
    upscaler: str = NO_UPSCALER
    scale_factor: float = SCALE_FACTOR.default
    keep_input_size: bool = True

    @property
    def upscaling(self) -> bool:
        return self.upscaler != NO_UPSCALER

    def upscaled_size(self, picture: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
        """The size img2img's ``picture`` is upscaled to: its own (*Keep input image size*) or the request's
        ``size``, times the factor, down to whole latent pixels (as A1111's upscalers round)."""
        return tuple(max(8, int(side * self.scale_factor) // 8 * 8)
                     for side in (picture if self.keep_input_size else size))

    def tiles(self, height: int, width: int) -> list[Tile]:
        """The tiles of a ``height`` x ``width`` latent grid, row by row; one, the whole grid, when it fits."""
        return _tiles(height, width, self.tile_height, self.tile_width, self.overlap)

    def batches(self, height: int, width: int) -> list[list[Tile]]:
        """The tiles in as few batches as the batch size allows, each but the last of the tiles' share of them
        rounded up (the extension's: 10 tiles at most 4 to a batch are 4, 4 and 2)."""
        tiles = self.tiles(height, width)
        count = math.ceil(len(tiles) / self.batch_size)
        size = math.ceil(len(tiles) / count)
        return [tiles[i:i + size] for i in range(0, len(tiles), size)]

    def weight(self, tile: Tile, device: torch.device) -> torch.Tensor | float:
        """A tile's weight at each of its latent pixels: 1 (MultiDiffusion), or Mixture of Diffusers' Gaussian
        (variance 0.01 of the tile's width squared on both axes, centred as the extension centres it), made once per
        tile size on ``device``."""
        if self.method == METHODS[0]:
            return 1.0
        return _gaussian(tile.height, tile.width, device)

    def infotext(self) -> dict:
        upscale = zip(UPSCALE_KEYS, (self.upscaler, self.scale_factor, self.keep_input_size)) if self.upscaling else ()
        return {"Method": self.method, **{number.key: getattr(self, number.field.removeprefix("td_"))
                                          for number in NUMBERS}, **dict(upscale)}


def from_infotext(params: Mapping[str, str]) -> dict:
    """The request fields of an infotext's Tiled Diffusion keys: the flat keys (an early version's, the upscaler's)
    and the dict over them, as the extension writes it (JSON) or as a Python dict (Easel's first versions); a dict
    that reads as neither is passed over."""
    given = {key: value for key, value in params.items() if key.startswith(f"{KEY} ")}
    if KEY in params:
        written = _dict(params[KEY])
        if written is None:
            return {}
        given.update(written)
    names = {"Method": "td_method", **{number.key: number.field for number in NUMBERS},
             **dict(zip(UPSCALE_KEYS, UPSCALE_FIELDS)), **_OLD_KEYS}
    values = {names[key]: value for key, value in given.items() if key in names}
    return {"tiled_diffusion": True, **values} if values else {}


def _dict(text: str) -> dict | None:
    """A dict's text as JSON, else as a Python literal (never evaluated as code); None when it is neither."""
    for read in (json.loads, ast.literal_eval):
        try:
            value = read(text)
        except (ValueError, SyntaxError):
            continue
        return value if isinstance(value, dict) else None
    return None


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one axis start: evenly spread, the last flush with the end."""
    if tile >= size:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (count - 1)
    return [min(int(i * step), size - tile) for i in range(count)]


@lru_cache(maxsize=32)
def _tiles(height: int, width: int, tile_height: int, tile_width: int, overlap: int) -> list[Tile]:
    overlap = max(0, min(overlap, min(tile_width, tile_height) - 4))  # the extension's bound, from the asked sizes
    tile_height, tile_width = min(tile_height, height), min(tile_width, width)
    return [Tile(top, left, tile_height, tile_width) for top in _starts(height, tile_height, overlap)
            for left in _starts(width, tile_width, overlap)]


@lru_cache(maxsize=8)
def _gaussian(height: int, width: int, device: torch.device) -> torch.Tensor:
    def bell(count: int, middle: float) -> torch.Tensor:
        offsets = torch.arange(count, dtype=torch.float64) - middle
        return torch.exp(-offsets * offsets / (width * width) / 0.02)

    return torch.outer(bell(height, height / 2), bell(width, (width - 1) / 2)).float().to(device)


def window(value: torch.Tensor, tile: Tile, height: int, width: int) -> torch.Tensor:
    """The part of ``value`` (rows x channels x its grid) over ``tile`` of a ``height`` x ``width`` latent grid: at
    the latents' own size the tile itself, at a UNet level's (each halving rounds up) the tile's cells there, as many
    as the UNet makes of a tile of its size."""
    rows, columns = value.shape[-2:]
    scale = 1
    while (math.ceil(height / scale), math.ceil(width / scale)) != (rows, columns):
        scale *= 2
        if scale > max(height, width) * 2:
            raise ValueError(f"A {rows}x{columns} input is not on a {height}x{width} latent grid.")
    tall, wide = math.ceil(tile.height / scale), math.ceil(tile.width / scale)
    top, left = min(tile.top // scale, rows - tall), min(tile.left // scale, columns - wide)
    return value[..., top:top + tall, left:left + wide]
