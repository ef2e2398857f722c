"""A1111's "parameters" infotext: write it, parse it, and carry it in image files.

Civitai, Fooocus, SD.Next and A1111 itself all read this exact text, so the layout, the quoting rule and
the parser's quirks (the "at least 3 params" test on the last line) follow A1111 to the character.
This module is generic: callers pass the ordered key/value pairs they want written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo

PNG_KEY = "parameters"
NEGATIVE_PREFIX = "Negative prompt:"
# Keys written on lines of their own after the parameters, in this order (the Dynamic Prompts extension's templates)
LINE_KEYS = ("Template", "Negative Template")
_LINE_KEY = re.compile(rf"^({'|'.join(LINE_KEYS)}): ", re.MULTILINE)

# One "Key: value" pair; the value is either a JSON string literal or runs to the next comma.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_AFTER_OBJECT = re.compile(r"\s*(?:,|$)")
_JSON = json.JSONDecoder()

# EXIF UserComment starts with an 8-byte character-code header (EXIF 2.3, section 4.6.5).
_USER_COMMENT_CODECS = {
    b"UNICODE\0": "utf-16-be",  # what A1111 writes (via piexif), big-endian unless a BOM says otherwise
    b"ASCII\0\0\0": "utf-8",  # lenient: some writers put UTF-8 behind the ASCII header
    b"JIS\0\0\0\0\0": "shift_jis",
    b"\0" * 8: "utf-8",  # "undefined" code
}


def _format_value(value: object) -> str:
    """str() like A1111, except integral floats lose their ".0" (A1111 shows "CFG scale: 7" for 7.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _pairs(line: str) -> list[tuple[str, str]]:
    """The ``Key: value`` pairs of a parameters line by A1111's pattern, but a JSON object (a dict an extension
    gives, which A1111 writes as ``json.dumps`` makes it: Tiled Diffusion's settings) read whole, as its text."""
    pairs, at = [], 0
    while match := _PARAM_RE.search(line, at):
        key, value = match.groups()
        at = match.end()
        if value.startswith("{"):
            try:
                end = _JSON.raw_decode(line, match.start(2))[1]
            except ValueError:
                end = None
            if end is not None and (after := _AFTER_OBJECT.match(line, end)):
                value, at = line[match.start(2):end], after.end()
        pairs.append((key, value))
    return pairs


def _quote(text: str) -> str:
    """JSON-quote values that would otherwise break the comma/colon-separated params line."""
    if any(ch in text for ch in ",:\n"):
        return json.dumps(text, ensure_ascii=False)
    return text


def _unquote(text: str) -> str:
    """Decode a JSON-quoted value; a malformed one is kept verbatim rather than lost."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


class NameHashes(dict):
    """A1111's ``name: hash, name: hash`` value (``Lora hashes``, ``TI hashes``), filled as files get used."""

    def __str__(self) -> str:
        return ", ".join(f"{name}: {digest}" for name, digest in self.items())


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """Build the text exactly as A1111's ``create_infotext`` does; params keep their given order."""
    parts, lines = [], "".join(f"\n{key}: {params[key]}" for key in LINE_KEYS if params.get(key))
    for key, value in params.items():
        if value is None or key in LINE_KEYS:
            continue
        if type(value) is dict:  # A1111 writes what json.dumps makes of it, unquoted (NameHashes: its own text)
            parts.append(f"{key}: {json.dumps(value, ensure_ascii=False)}")
            continue
        text = _format_value(value)
        if text == "":
            continue
        parts.append(key if key == text else f"{key}: {_quote(text)}")
    negative = f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{', '.join(parts)}".strip() + lines


def with_params(infotext: str, params: Mapping[str, object]) -> str:
    """``infotext`` with ``params`` after its own (as A1111 adds a script's ``extra_generation_params``)."""
    prompt, negative, own = parse_infotext(infotext)
    return format_infotext(prompt, negative, {**own, **params})


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split infotext into (prompt, negative prompt, params) with A1111's parser rules.

    The last line is the params line only when it holds at least 3 "Key: value" pairs, so a prompt that
    merely contains a colon is not mistaken for parameters. Values stay strings, in file order; the ``LINE_KEYS``
    lines after the parameters line are among them (A1111 leaves them to the extension that wrote them).
    """
    lines = text.strip().split("\n")
    after = next((i for i in range(len(lines) - 1, 0, -1)
                  if _LINE_KEY.match(lines[i]) and len(_pairs(lines[i - 1])) >= 3), len(lines))
    block = _LINE_KEY.split("\n".join(lines[after:]))[1:]  # key, value, key, value...
    *lines, last = lines[:after]
    if len(_pairs(last)) < 3:
        lines.append(last)
        last = ""

    lines = [line.strip() for line in lines]
    neg_at = next((i for i, line in enumerate(lines) if line.startswith(NEGATIVE_PREFIX)), len(lines))
    prompt = "\n".join(lines[:neg_at]).strip()
    negative_lines = lines[neg_at:]
    if negative_lines:
        negative_lines[0] = negative_lines[0][len(NEGATIVE_PREFIX) :]
    negative = "\n".join(negative_lines).strip()

    # An empty value is what A1111 drops too (it never writes one).
    params = {key: _unquote(value) for key, value in _pairs(last) if value}
    params.update((key, value.strip()) for key, value in zip(block[::2], block[1::2]))
    return prompt, negative, params


def _decode_user_comment(raw: bytes | str) -> str:
    """Decode an EXIF UserComment like piexif's helper, but never fail: unknown headers fall back to UTF-8."""
    if isinstance(raw, str):
        return raw.rstrip("\0")
    header, payload = raw[:8], raw[8:]
    codec = _USER_COMMENT_CODECS.get(header)
    if codec is None:
        codec, payload = "utf-8", raw
    elif codec == "utf-16-be" and payload[:2] in (b"\xff\xfe", b"\xfe\xff"):
        codec = "utf-16"  # a BOM names the byte order itself
    return payload.decode(codec, errors="replace").rstrip("\0")


def read_infotext(image: Image.Image) -> str | None:
    """The infotext an image carries: the PNG ``parameters`` chunk, else the EXIF UserComment (JPEG/WebP)."""
    text = image.info.get(PNG_KEY)
    if text:
        return str(text)
    raw = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    if not raw:
        return None
    return _decode_user_comment(raw) or None


def exif_metadata(infotext: str) -> Image.Exif:
    """EXIF holding the infotext as A1111 writes it into a JPEG or WebP: the UserComment, in UTF-16 (big end first)
    behind piexif's ``UNICODE`` header. Other text (A1111's ``postprocessing``) has no place there, as in A1111."""
    exif = Image.Exif()
    if infotext:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = b"UNICODE\0" + infotext.encode("utf-16-be")
    return exif


def png_metadata(infotext: str, **chunks: str) -> PngInfo:
    """PNG text chunks holding the infotext (when there is one) and ``chunks`` (A1111's ``postprocessing``);
    Pillow's add_text switches to iTXt when a text is not latin-1."""
    info = PngInfo()
    for key, text in {PNG_KEY: infotext, **chunks}.items():
        if text:
            info.add_text(key, text)
    return info
