"""Preparing img2img and inpainting inputs the way A1111 does, and putting results back.

- Resize modes: "Just resize" stretches, "Crop and resize" covers then crops the centre, "Resize and fill"
  fits inside and fills the margins by stretching the image's edge rows and columns, and (img2img only) "Just
  resize (latent upscale)" encodes the picture at its own size and stretches its latents.
- The mask is greyscale (white repaints), optionally inverted, blurred by ``mask_blur`` pixels.
- Masked content: "original" keeps the pixels; "fill" replaces them with colours from their surroundings;
  "latent noise" and "latent nothing" (which A1111 applies to latents) are done here in pixel space, as seeded
  noise and as mid grey (what a zero latent decodes to), which start the sampler from the same kind of place.
- Outpainting extends the canvas by the request's margins, fills them by repeating the edge pixels, and masks
  them plus a thin band of the original so the seam is repainted too; masked content then applies as usual.
- After sampling, the result is laid over the original through the blurred mask, so unmasked pixels are exactly
  the original's (the VAE round trip would otherwise shift them).
- Colour correction (A1111's img2img setting): the result's colours are matched to the original's, histogram by
  histogram in (8-bit) CIELAB, keeping the result's own lightness (A1111 matches all three, then takes the result's
  luminosity back with a blend), so repeated img2img (Loopback) does not drift in colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageChops, ImageFilter, ImageOps
from skimage import exposure

from .errors import RequestError
from .request import EMPTY_MASK, LATENT_RESIZE, GenerationRequest


def place_with_edges(inner: Image.Image, size: tuple[int, int], offset: tuple[int, int]) -> Image.Image:
    """``inner`` at ``offset`` on a canvas of ``size`` whose margins repeat the nearest edge row or column."""
    rows = np.clip(np.arange(size[1]) - offset[1], 0, inner.height - 1)
    cols = np.clip(np.arange(size[0]) - offset[0], 0, inner.width - 1)
    return Image.fromarray(np.asarray(inner)[rows][:, cols])


def resize_image(image: Image.Image, width: int, height: int, mode: int) -> Image.Image:
    """A picture at the request's size by resize mode; the latent mode stretches here (masks, overlays) and its
    init image is resized as latents by the pipeline step instead."""
    image = image.convert("RGB") if image.mode not in ("RGB", "L") else image
    if mode in (0, LATENT_RESIZE):
        return image.resize((width, height), Image.LANCZOS)
    if mode == 1:
        return ImageOps.fit(image, (width, height), Image.LANCZOS)
    scale = min(width / image.width, height / image.height)
    inner = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    return place_with_edges(inner, (width, height), ((width - inner.width) // 2, (height - inner.height) // 2))


SEAM = 8  # outpainting repaints this many pixels of the original along each new edge, to hide the seam


def prepare_mask(request: GenerationRequest) -> Image.Image:
    """The mask at the output size, as A1111 prepares it: L mode, inverted if asked, outpainted margins added,
    blurred."""
    left, right, up, down = request.outpaint
    size = request.output_size
    mask = Image.new("L", size, 0)
    if request.mask is not None:
        painted = request.mask
        if painted.mode in ("RGBA", "LA") and painted.getextrema()[-1][0] < 255:
            painted = painted.getchannel("A")  # a painted layer: its alpha is the mask
        painted = resize_image(painted.convert("L"), request.width, request.height, request.resize_mode)
        mask.paste(ImageOps.invert(painted) if request.inpainting_mask_invert else painted, (left, up))
    if any(request.outpaint):
        margins = Image.new("L", size, 255)
        keep = (left + SEAM * bool(left), up + SEAM * bool(up),
                size[0] - right - SEAM * bool(right), size[1] - down - SEAM * bool(down))
        margins.paste(0, keep)
        mask = ImageChops.lighter(mask, margins)
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


def match_colours(picture: Image.Image, reference: Image.Image) -> Image.Image:
    """``picture`` with the colours of ``reference`` (colour correction), its lightness kept (8-bit CIELAB, as
    A1111's: colours outside sRGB are clipped)."""
    lab, target = (cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2LAB) for image in (picture, reference))
    matched = np.rint(exposure.match_histograms(lab, target, channel_axis=2)).astype(np.uint8)
    matched[..., 0] = lab[..., 0]
    return Image.fromarray(cv2.cvtColor(matched, cv2.COLOR_LAB2RGB))


@dataclass(frozen=True)
class TaskImages:
    """The prepared inputs of an img2img or inpaint job."""

    image: Image.Image | list[Image.Image]  # what the sampler starts from (a list: one per picture of the batch)
    original: Image.Image | list[Image.Image]  # resized, unfilled: what the result is laid over (or each's)
    mask: Image.Image | None = None
    resize_latents: bool = False  # ``image`` is at its own size; encode it, then resize its latents
    colours: Image.Image | None = None  # what colour correction matches (Loopback's: the first loop's original)

    @classmethod
    def prepare(cls, request: GenerationRequest) -> "TaskImages | None":
        if request.task == "txt2img":
            return None
        original = resize_image(request.init_image, request.width, request.height, request.resize_mode)
        if request.task == "img2img":
            if request.resize_mode == LATENT_RESIZE:
                return cls(request.init_image.convert("RGB"), original, resize_latents=True)
            return cls(original, original)
        left, _, up, _ = request.outpaint
        original = place_with_edges(original, request.output_size, (left, up))  # edge-extended when outpainting
        mask = prepare_mask(request)
        if mask.getbbox() is None:
            raise RequestError(EMPTY_MASK, "mask")
        return cls(fill_masked(original, mask, request.inpainting_fill, request.seed), original, mask)

    def pictures(self, count: int) -> list[Image.Image]:
        """The picture each of ``count`` pictures of the batch starts from."""
        return _each(self.image, count)

    def pipeline_arguments(self, request: GenerationRequest) -> dict:
        arguments = {"image": self.image, "strength": request.denoising_strength}
        if self.mask is not None:
            arguments.update(mask_image=self.mask, width=self.image.width, height=self.image.height)
            if request.inpaint_full_res:
                arguments["padding_mask_crop"] = request.inpaint_full_res_padding
        return arguments

    def finish(self, results: list[Image.Image], request: GenerationRequest,
               masks: list[Image.Image] | None = None) -> list[Image.Image]:
        """Colour correction when asked for (each picture to its own original); then keep unmasked pixels exactly as
        they were (diffusers already does so for "only masked"), or lay each picture over its original through its
        own mask (soft inpainting's)."""
        if request.corrects_colours:
            references = _each(self.colours or self.original, len(results))
            results = [match_colours(result, reference) for result, reference in zip(results, references)]
        if self.mask is None or (request.inpaint_full_res and masks is None):
            return list(results)
        return [Image.composite(result.convert("RGB"), original, mask) for result, original, mask in
                zip(results, _each(self.original, len(results)), masks or [self.mask] * len(results))]


def _each(pictures: Image.Image | list[Image.Image], count: int) -> list[Image.Image]:
    """One picture for each of ``count``: a list as it is, a single picture repeated."""
    return list(pictures) if isinstance(pictures, list) else [pictures] * count
