"""Images in JSON: base64 PNGs out (with their infotext, as A1111 sends them), base64 images in.

Incoming images are only ever decoded from the request's own bytes: URLs are not fetched and nothing is
read from disk, and a header that declares an absurd size is refused before any pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image

from pipelines.errors import RequestError
from pipelines.infotext import png_metadata

MAX_PIXELS = 8192 * 8192


class PayloadError(RequestError):
    """A payload value the API cannot use, with the A1111 field it came from (answered as 422)."""

    def __init__(self, field: str, message: str):
        super().__init__(message, field)


def decode_image(data: object, field: str) -> Image.Image:
    """A PIL image from base64 text, with or without a ``data:image/...;base64,`` prefix."""
    if not isinstance(data, str) or not data.strip():
        raise PayloadError(field, "Expected a base64-encoded image.")
    text = data.strip()
    if text.startswith(("http://", "https://")):
        raise PayloadError(field, "Images are not fetched from URLs; send the image itself as base64.")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode(text)
    except (binascii.Error, ValueError):
        raise PayloadError(field, "This is not valid base64.") from None
    too_large = "The image {}is larger than this server accepts (at most 8192x8192 pixels)."
    try:
        with warnings.catch_warnings():  # PIL's own bomb limits, above ours, warn or refuse while opening
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_PIXELS:
            raise PayloadError(field, too_large.format(f"({image.width}x{image.height}) "))
        image.load()
    except PayloadError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise PayloadError(field, too_large.format("")) from None
    except (OSError, ValueError, SyntaxError):
        raise PayloadError(field, "This is not an image (PNG, JPEG, WebP, ...) encoded as base64.") from None
    return image


def encode_png(image: Image.Image) -> str:
    """Base64 PNG keeping the image's infotext in its ``parameters`` chunk."""
    buffer = io.BytesIO()
    text = image.info.get("parameters")
    image.save(buffer, format="PNG", pnginfo=png_metadata(text) if text else None)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
