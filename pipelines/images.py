"""Preparing img2img and inpainting inputs the way A1111 does, and putting results back.

- Resize modes: "Just resize" stretches, "Crop and resize" covers then crops the centre, "Resize and fill"
  fits inside and fills the margins by stretching the image's edge rows and columns.
- The mask is greyscale (white repaints), optionally inverted, blurred by ``mask_blur`` pixels.
- Masked content: "original" keeps the pixels; "fill" replaces them with colours from their surroundings;
  "latent noise" and "latent nothing" (which A1111 applies to latents) are done here in pixel space, as seeded
  noise and as mid grey (what a zero latent decodes to), which start the sampler from the same kind of place.
- After sampling, the result is laid over the original through the blurred mask, so unmasked pixels are exactly
  the original's (the VAE round trip would otherwise shift them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .request import GenerationRequest


def resize_image(image: Image.Image, width: int, height: int, mode: int) -> Image.Image:
    image = image.convert("RGB")
    if mode == 0:
        return image.resize((width, height), Image.LANCZOS)
    if mode == 1:
        return ImageOps.fit(image, (width, height), Image.LANCZOS)
    scale = min(width / image.width, height / image.height)
    inner = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    canvas = inner.resize((width, height), Image.LANCZOS)  # stretched edges under the margins...
    left, top = (width - inner.width) // 2, (height - inner.height) // 2
    if inner.width < width:  # ...made from the outermost columns
        canvas.paste(inner.crop((0, 0, 1, inner.height)).resize((left, height)) if left else inner, (0, 0))
        right = width - left - inner.width
        if right:
            canvas.paste(inner.crop((inner.width - 1, 0, inner.width, inner.height)).resize((right, height)),
                         (left + inner.width, 0))
    if inner.height < height:  # or rows
        if top:
            canvas.paste(inner.crop((0, 0, inner.width, 1)).resize((width, top)), (0, 0))
        bottom = height - top - inner.height
        if bottom:
            canvas.paste(inner.crop((0, inner.height - 1, inner.width, inner.height)).resize((width, bottom)),
                         (0, top + inner.height))
    canvas.paste(inner, (left, top))
    return canvas


def prepare_mask(mask: Image.Image, request: GenerationRequest) -> Image.Image:
    """The mask at the request's size, as A1111 prepares it: L mode, inverted if asked, blurred."""
    if mask.mode in ("RGBA", "LA") and mask.getextrema()[-1][0] < 255:
        mask = mask.getchannel("A")  # a painted layer: its alpha is the mask
    mask = resize_image(mask.convert("L"), request.width, request.height, request.resize_mode).convert("L")
    if request.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    return mask.filter(ImageFilter.GaussianBlur(request.mask_blur)) if request.mask_blur else mask


def _surroundings(image: Image.Image, hole: Image.Image) -> Image.Image:
    """Colours flowing in from outside ``hole``: blurs of the kept pixels alone (premultiplied alpha makes the
    blur ignore the hole), coarse to fine, each laid over the last."""
    known = image.convert("RGBA")
    known.putalpha(ImageOps.invert(hole))
    premultiplied = known.convert("RGBa")
    fill = Image.new("RGBA", image.size)
    for radius in (max(image.size) / 2, max(image.size) / 8, 8, 2):
        fill.alpha_composite(premultiplied.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA"))
    return fill.convert("RGB")


def fill_masked(image: Image.Image, mask: Image.Image, mode: int, seed: int) -> Image.Image:
    if mode == 1:
        return image
    hole = mask.point(lambda v: 255 if v > 127 else 0)
    if mode == 0:
        fill = _surroundings(image, hole)
    elif mode == 2:
        noise = np.random.default_rng(seed).integers(0, 256, (image.height, image.width, 3), dtype=np.uint8)
        fill = Image.fromarray(noise)
    else:
        fill = Image.new("RGB", image.size, (128, 128, 128))
    return Image.composite(fill, image, hole)


@dataclass(frozen=True)
class TaskImages:
    """The prepared inputs of an img2img or inpaint job."""

    image: Image.Image  # what the sampler starts from
    original: Image.Image  # resized, unfilled: what the result is laid over
    mask: Image.Image | None = None

    @classmethod
    def prepare(cls, request: GenerationRequest) -> "TaskImages | None":
        if request.task == "txt2img":
            return None
        original = resize_image(request.init_image, request.width, request.height, request.resize_mode)
        if request.task == "img2img":
            return cls(original, original)
        mask = prepare_mask(request.mask, request)
        return cls(fill_masked(original, mask, request.inpainting_fill, request.seed), original, mask)

    def pipeline_arguments(self, request: GenerationRequest) -> dict:
        arguments = {"image": self.image, "strength": request.denoising_strength}
        if self.mask is not None:
            arguments.update(mask_image=self.mask, width=request.width, height=request.height)
            if request.inpaint_full_res:
                arguments["padding_mask_crop"] = request.inpaint_full_res_padding
        return arguments

    def finish(self, result: Image.Image, request: GenerationRequest) -> Image.Image:
        """Keep unmasked pixels exactly as they were (diffusers already does so for "only masked")."""
        if self.mask is None or request.inpaint_full_res:
            return result
        return Image.composite(result.convert("RGB"), self.original, self.mask)
