"""Seamless tiling (A1111's "Tiling"): for one job, every convolution of the UNet and the autoencoder pads
circularly instead of with zeros, so the picture's left edge continues its right edge and its top its bottom:
a texture that repeats without seams. A compiled UNet compiles its blocks again for it (the padding is part of
what a graph was made for)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from .speed import autoencoder


@contextmanager
def tiled(pipe, enabled: bool) -> Iterator[None]:
    """Circular padding in ``pipe``'s UNet and autoencoder while the block runs (its task variants share them)."""
    if not enabled:
        yield
        return
    convolutions = [module for model in (pipe.unet, autoencoder(pipe)) for module in model.modules()
                    if isinstance(module, torch.nn.Conv2d)]
    modes = [conv.padding_mode for conv in convolutions]
    for conv in convolutions:
        conv.padding_mode = "circular"
    try:
        yield
    finally:
        for conv, mode in zip(convolutions, modes):
            conv.padding_mode = mode
