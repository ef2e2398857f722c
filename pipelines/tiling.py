"""Seamless tiling (A1111's "Tiling"): for one job, every convolution of the UNet and the autoencoder pads
circularly instead of with zeros, so the picture's left edge continues its right edge and its top its bottom:
a texture that repeats without seams. ``x`` or ``y`` wraps one axis only (the Asymmetric tiling extension's Tile X
and Tile Y: a panorama that closes on itself left to right, a strip that repeats downwards), zeros on the other. A
compiled UNet compiles its blocks again for it (the padding is part of what a graph was made for)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from .speed import autoencoder

AXES = ("both", "x", "y")


def axes_of(tile_x: bool, tile_y: bool) -> str | None:
    """The axes of the Asymmetric tiling extension's Tile X and Tile Y (None: neither, no tiling)."""
    return "both" if tile_x and tile_y else "x" if tile_x else "y" if tile_y else None


@contextmanager
def tiled(pipe, axes: str | None) -> Iterator[None]:
    """Circular padding on ``axes`` ("both", "x", "y"; None: off) in ``pipe``'s UNet and autoencoder while the block
    runs (its task variants share them)."""
    if not axes:
        yield
        return
    convolutions = [module for model in (pipe.unet, autoencoder(pipe)) for module in model.modules()
                    if isinstance(module, torch.nn.Conv2d)]
    modes = [conv.padding_mode for conv in convolutions]
    for conv in convolutions:
        if axes == "both":
            conv.padding_mode = "circular"
        elif conv.padding_mode == "zeros" and not isinstance(conv.padding, str) and any(conv.padding):
            conv._conv_forward = _one_axis_forward(conv, axes)
    try:
        yield
    finally:
        for conv, mode in zip(convolutions, modes):
            conv.padding_mode = mode
            conv.__dict__.pop("_conv_forward", None)


def _one_axis_forward(conv: torch.nn.Conv2d, axis: str):
    """``conv``'s convolution with its padding wrapped around on ``axis`` and zeros on the other."""
    height, width = conv.padding
    across, down = (width, width, 0, 0), (0, 0, height, height)  # F.pad's order: last dimension (x) first
    wrapped, zeroed = (across, down) if axis == "x" else (down, across)

    def forward(input, weight, bias):
        padded = F.pad(F.pad(input, wrapped, mode="circular"), zeroed)
        return F.conv2d(padded, weight, bias, conv.stride, 0, conv.dilation, conv.groups)

    return forward
