"""A1111's file name patterns (its ``samples_filename_pattern`` and ``directories_filename_pattern`` settings):
``[seed]-[prompt_words]`` names a saved picture by its parameters, read from the infotext it is saved with, after the
number that keeps names apart (``00012-5-a red circle.png``); ``[date]`` names the folder it goes in, and
``[datetime<%Y%m%d_%H%M%S><Europe/Paris>]`` is the time in a format and a time zone.

Values are made safe as A1111 makes them (characters no file system takes become ``_``, a part is at most 128
characters), and the whole name too: a pattern names a file in its folder, never a path elsewhere. A token that is
not one of ``TOKENS`` is refused when the pattern is set, instead of being written into every name as A1111 does.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import string
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import RequestError
from .infotext import parse_infotext

DEFAULT = "[seed]"  # A1111's name when the pattern is empty
_TOKEN = re.compile(r"\[(\w+)(?:<([^>\]]*)>)?(?:<([^>\]]*)>)?\]")  # [name], [datetime<format>], [datetime<f><zone>]
_INVALID = '#<>:"/\\|?*\n\r\t'  # A1111's invalid_filename_chars, with / and \ so that a name is never a path
_NON_LETTERS = re.compile(rf"[\s{re.escape(string.punctuation)}]+")
MAX_PART = 128  # A1111's max_filename_part_length
MAX_BYTES = 200  # of the pattern's whole text: the number, the suffix and a file system's 255 bytes leave room
PROMPT_WORDS = 8  # A1111's directories_max_prompt_words


def _safe(text: str, keep_spaces: bool = True) -> str:
    """A1111's sanitize_filename_part: spaces to ``_`` unless kept, no invalid characters, no leading space and no
    trailing space or dot (which some file systems drop)."""
    if not keep_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(char): "_" for char in _INVALID}).lstrip(" ")
    return text[:MAX_PART].rstrip(" .")


# Tokens that are a parameter of the infotext, by its key there.
_PARAMETERS = {"seed": "Seed", "steps": "Steps", "cfg": "CFG scale", "sampler": "Sampler",
               "scheduler": "Schedule type", "model_name": "Model", "model_hash": "Model hash",
               "denoising": "Denoising strength", "clip_skip": "Clip skip"}
TOKENS = (*_PARAMETERS, "width", "height", "prompt", "prompt_spaces", "prompt_words", "negative_prompt",
          "prompt_hash", "negative_prompt_hash", "full_prompt_hash", "vae_filename", "date", "datetime")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _time(now: datetime.datetime, form: str | None, zone: str | None, field: str = "") -> str:
    """A1111's [datetime<format><zone>]: ``now`` (local) in a strftime ``format`` and an IANA time ``zone``."""
    if zone:
        try:
            now = now.astimezone(ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise RequestError(f"Unknown time zone {zone!r} in the file name pattern (an IANA name: "
                               "Europe/Paris, UTC).", field) from None
    return now.strftime(form or "%Y%m%d%H%M%S")


def _value(token: str, prompt: str, negative: str, params: dict[str, str], now: datetime.datetime,
           form: str | None = None, zone: str | None = None) -> str:
    if token in _PARAMETERS:
        return _safe(params.get(_PARAMETERS[token], ""))
    if token in ("width", "height"):
        size = params.get("Size", "").split("x")
        return size[token == "height"] if len(size) == 2 else ""
    if token == "prompt_words":
        return _safe(" ".join([word for word in _NON_LETTERS.split(prompt) if word][:PROMPT_WORDS]) or "empty")
    if token in ("prompt", "prompt_spaces", "negative_prompt"):
        return _safe(negative if token == "negative_prompt" else prompt, keep_spaces=token == "prompt_spaces")
    if token.endswith("prompt_hash"):  # A1111's: the first 8 hex digits of a sha256
        return _hash({"prompt_hash": prompt, "negative_prompt_hash": negative}.get(token, f"{prompt} {negative}"))
    if token == "vae_filename":
        return _safe(params.get("VAE", "NoneType"))  # A1111's word when no VAE file replaced the model's own
    return _safe(_time(now, "%Y-%m-%d" if token == "date" else form, zone))


def check(pattern: str, field: str) -> str:
    """``pattern`` when every bracketed word in it is a token; otherwise a message naming the first that is not."""
    for match in _TOKEN.finditer(pattern):
        if match[1].lower() not in TOKENS:
            raise RequestError(f"Unknown token [{match[1]}] in the file name pattern; the tokens are "
                               f"{', '.join(f'[{name}]' for name in TOKENS)}.", field)
        if match[2] is not None and match[1].lower() != "datetime":
            raise RequestError(f"Only [datetime] takes a <format>, not [{match[1]}].", field)
        _time(datetime.datetime.now(), match[2], match[3], field)  # an unknown zone is refused here
    return pattern


def file_stem(pattern: str, infotext: str, seed: int | None = None, now: datetime.datetime | None = None) -> str:
    """The part of a picture's file name after its number: ``pattern`` (``DEFAULT`` when empty) with each token
    replaced by the picture's value (``seed`` when given, else the infotext's), safe as a file name; empty when
    nothing is left."""
    prompt, negative, params = parse_infotext(infotext)
    if seed is not None:
        params["Seed"] = str(seed)
    now = now or datetime.datetime.now()
    text = _TOKEN.sub(lambda match: _value(match[1].lower(), prompt, negative, params, now, *match.group(2, 3)),
                      pattern or DEFAULT)
    text = text.translate({ord(char): "_" for char in _INVALID})
    return text.encode()[:MAX_BYTES].decode(errors="ignore").strip(" .")
