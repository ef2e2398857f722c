"""A ControlNet unit's effective region mask (the sd-webui-controlnet extension's ``effective_region_mask``): where
the unit acts, white fully, grey partly, black not at all. An IP-Adapter unit's image tokens and a ControlNet
unit's residuals are weighed by it, at whatever latent size the UNet call or the residual has (a hires pass's too):
the mask is stretched to the picture, as the extension does."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class RegionMask:
    """A mask picture as weights, resized once per size, device and dtype asked for."""

    def __init__(self, image):
        grey = np.asarray(image.convert("L"), dtype=np.float32) / 255
        self.values = torch.from_numpy(grey)[None, None]
        self._sized: dict = {}

    def at(self, size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """The weights as a (1, 1, height, width) tensor on ``like``'s device and in its dtype."""
        key = (tuple(size), like.device, like.dtype)
        if key not in self._sized:
            self._sized[key] = F.interpolate(self.values, size=tuple(size), mode="area").to(like.device, like.dtype)
        return self._sized[key]
