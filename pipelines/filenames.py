"""A1111's file name patterns (its ``samples_filename_pattern`` and ``directories_filename_pattern`` settings):
``[seed]-[prompt_words]`` names a saved picture by its parameters, read from the infotext it is saved with, and by the
job it was made in (``Naming``: its styles, seeds, batch and start), after the number that keeps names apart
(``00012-5-a red circle.png``); ``[date]`` names the folder it goes in; ``[datetime<%Y%m%d_%H%M%S><Europe/Paris>]``
is the time in a format and a time zone, ``[prompt_hash<12>]`` and ``[image_hash<8>]`` hashes of a length, and
``[hasprompt<cat|dog><red>]`` says which words the prompt holds.

Values are made safe as A1111 makes them (characters no file system takes become ``_``, a part is at most 128
characters), and the whole name too: a pattern names a file in its folder, never a path elsewhere. A token with no
value for a picture (``[batch_number]`` in a batch of one, ``[denoising]`` in txt2img) is left out with the text
before it, as A1111 leaves it out: ``[seed]-[batch_number]`` is ``5`` alone. A token that is not one of ``TOKENS`` is
refused when the pattern is set, instead of being written into every name as A1111 does.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import string
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from PIL import Image

from .errors import RequestError
from .infotext import parse_infotext

DEFAULT = "[seed]"  # A1111's name when the pattern is empty
DEFAULT_UNSORTED = "[seed]-[prompt_spaces]"  # ... and when pictures are not saved to subdirectories
_TOKEN = re.compile(r"\[(\w+)((?:<[^>\]]*>)*)\]")  # [name], [name<argument>], [name<a><b>...]
_ARGUMENT = re.compile(r"<([^>\]]*)>")
_INVALID = '#<>:"/\\|?*\n\r\t'  # A1111's invalid_filename_chars, with / and \ so that a name is never a path
_NON_LETTERS = re.compile(rf"[\s{re.escape(string.punctuation)}]+")
MAX_PART = 128  # A1111's max_filename_part_length
MAX_BYTES = 200  # of the pattern's whole text: the number, the suffix and a file system's 255 bytes leave room
PROMPT_WORDS = 8  # A1111's directories_max_prompt_words
TIME_FORMAT = "%Y%m%d%H%M%S"  # A1111's [datetime] and [job_timestamp]
_SKIP = object()  # A1111's NOTHING_AND_SKIP_PREVIOUS_TEXT: no value here, and no text before it either


@dataclass(frozen=True)
class Naming:
    """What a name can say beyond a picture's infotext: the job it was made in (A1111 reads these off its processing
    object) and the picture's place in it (``index``, from 0; None for a grid of the job's pictures)."""
    prompt_no_styles: str | None = None  # the prompt as typed, before its styles were written in
    styles: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()  # the job's, in order
    batch_size: int = 1
    batch_count: int = 1
    started: datetime.datetime | None = None  # [job_timestamp]
    index: int | None = None


def _safe(text: str, keep_spaces: bool = True) -> str:
    """A1111's sanitize_filename_part: spaces to ``_`` unless kept, no invalid characters, no leading space and no
    trailing space or dot (which some file systems drop)."""
    if not keep_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(char): "_" for char in _INVALID}).lstrip(" ")
    return text[:MAX_PART].rstrip(" .")


# Tokens that are a parameter of the infotext, by its key there.
_PARAMETERS = {"steps": "Steps", "cfg": "CFG scale", "sampler": "Sampler", "scheduler": "Schedule type",
               "model_name": "Model", "model_hash": "Model hash"}
_HASHES = ("prompt_hash", "negative_prompt_hash", "full_prompt_hash", "image_hash")  # [name<length>]
TOKENS = ("seed", "seed_first", "seed_last", *_PARAMETERS, "clip_skip", "denoising", "width", "height", "styles",
          "prompt", "prompt_spaces", "prompt_words", "prompt_no_styles", "negative_prompt", *_HASHES, "hasprompt",
          "batch_number", "batch_size", "generation_number", "vae_filename", "date", "datetime", "job_timestamp",
          "none")
_ARGUMENTS = {"datetime": 2, "hasprompt": None, **dict.fromkeys(_HASHES, 1)}  # how many a token takes (None: any)


def _time(now: datetime.datetime, form: str | None = None, zone: str | None = None, field: str = "") -> str:
    """A1111's [datetime<format><zone>]: ``now`` (local) in a strftime ``format`` and an IANA time ``zone``."""
    if zone:
        try:
            now = now.astimezone(ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise RequestError(f"Unknown time zone {zone!r} in the file name pattern (an IANA name: "
                               "Europe/Paris, UTC).", field) from None
    return now.strftime(form or TIME_FORMAT)


def _has_prompt(prompt: str, arguments: list[str]) -> str:
    """A1111's [hasprompt<word|otherwise>...]: each word the prompt holds, or its ``otherwise`` when given."""
    found = ""
    for argument in filter(None, arguments):
        word, _, otherwise = argument.partition("|")
        found += word.lower() if word.lower() in prompt.lower() else otherwise
    return found


class _Picture:
    """One picture's token values: its infotext's parameters, its job's (``Naming``), the picture itself."""

    def __init__(self, infotext: str, seed: int | None, now: datetime.datetime, naming: Naming | None,
                 image: Image.Image | None):
        self.prompt, self.negative, self.params = parse_infotext(infotext)
        if seed is not None:
            self.params["Seed"] = str(seed)
        self.now, self.naming, self.image = now, naming or Naming(), image

    def value(self, token: str, arguments: list[str]):
        """The token's text, ``_SKIP`` when the picture has none, None when it is no token."""
        params, naming = self.params, self.naming
        if token in _PARAMETERS:
            return _safe(params.get(_PARAMETERS[token], ""))
        if token in ("seed", "seed_first", "seed_last"):  # the first and last of a batch's, as A1111's
            batched = naming.batch_size > 1 and naming.seeds
            if token == "seed_last":
                return str(naming.seeds[-1]) if batched else _SKIP
            return str(naming.seeds[0]) if batched and token == "seed_first" else params.get("Seed", "")
        if token == "clip_skip":
            return params.get("Clip skip", "1")
        if token == "denoising":
            return params.get("Denoising strength", _SKIP)
        if token in ("width", "height"):
            size = self.image.size if self.image else params.get("Size", "").split("x")
            return str(size[token == "height"]) if len(size) == 2 else ""
        if token == "styles":
            return _safe(", ".join(naming.styles) or "None")
        if token == "prompt_words":
            words = [word for word in _NON_LETTERS.split(self.prompt) if word][:PROMPT_WORDS]
            return _safe(" ".join(words) or "empty")
        if token in ("prompt", "prompt_spaces", "prompt_no_styles", "negative_prompt"):
            text = {"negative_prompt": self.negative, "prompt_no_styles": naming.prompt_no_styles}.get(token)
            return _safe(self.prompt if text is None else text, keep_spaces=token != "prompt")
        if token in _HASHES:  # A1111's: a sha256's first hex digits (8, or the whole image's)
            length = int(arguments[0]) if arguments and arguments[0] else (None if token == "image_hash" else 8)
            if token == "image_hash":
                return hashlib.sha256(self.image.tobytes()).hexdigest()[:length] if self.image else _SKIP
            text = {"prompt_hash": self.prompt, "negative_prompt_hash": self.negative}.get(
                token, f"{self.prompt} {self.negative}")
            return hashlib.sha256(text.encode()).hexdigest()[:length]
        if token == "hasprompt":
            return _safe(_has_prompt(self.prompt, arguments))
        if token == "batch_size":
            return str(naming.batch_size)
        if token in ("batch_number", "generation_number"):  # from 1, and none where the job made one picture
            alone = naming.batch_size == 1 and (token == "batch_number" or naming.batch_count == 1)
            if alone or naming.index is None:
                return _SKIP
            return str(naming.index % naming.batch_size + 1 if token == "batch_number" else naming.index + 1)
        if token == "vae_filename":  # A1111's: the file's name without its extension, its word when there is none
            return _safe(params.get("VAE", "NoneType").lstrip(".").split(".")[0])
        if token == "none":  # A1111's way to a name that is its number alone
            return ""
        if token == "job_timestamp":
            return _time(naming.started or self.now)
        if token in ("date", "datetime"):
            return _safe(_time(self.now, "%Y-%m-%d" if token == "date" else arguments[0] if arguments else None,
                               arguments[1] if len(arguments) > 1 else None))
        return None  # not a token: kept as it is written, as A1111 keeps it (``check`` refuses it beforehand)


def check(pattern: str, field: str) -> str:
    """``pattern`` when every bracketed word in it is a token with arguments it takes; otherwise a message naming
    the first that is not."""
    for match in _TOKEN.finditer(pattern):
        token, arguments = match[1].lower(), _ARGUMENT.findall(match[2])
        if token not in TOKENS:
            raise RequestError(f"Unknown token [{match[1]}] in the file name pattern; the tokens are "
                               f"{', '.join(f'[{name}]' for name in TOKENS)}.", field)
        most = _ARGUMENTS.get(token, 0)
        if most is not None and len(arguments) > most:
            takers = ", ".join(f"[{name}]" for name in _ARGUMENTS)
            raise RequestError(f"[{match[1]}] takes {most or 'no'} <argument{'s' if most != 1 else ''}>; the "
                               f"tokens that take some are {takers}.", field)
        if token in _HASHES and arguments and not arguments[0].isdigit():
            raise RequestError(f"[{match[1]}<{arguments[0]}>]: a hash's length is a whole number.", field)
        if token == "datetime":
            _time(datetime.datetime.now(), *arguments, field=field)  # an unknown zone is refused here
    return pattern


def file_stem(pattern: str, infotext: str, seed: int | None = None, now: datetime.datetime | None = None,
              naming: Naming | None = None, image: Image.Image | None = None) -> str:
    """``pattern`` with each token replaced by the picture's value (``seed`` when given, else the infotext's; the
    job's, ``naming``; ``image``'s size and hash), safe as a file name; empty when nothing is left."""
    picture = _Picture(infotext, seed, now or datetime.datetime.now(), naming, image)
    parts, start = [], 0
    for match in _TOKEN.finditer(pattern):
        value = picture.value(match[1].lower(), _ARGUMENT.findall(match[2]))
        if value is not _SKIP:
            parts += [pattern[start:match.start()], match[0] if value is None else value]
        start = match.end()
    text = "".join(parts) + pattern[start:]
    text = text.translate({ord(char): "_" for char in _INVALID})
    return text.encode()[:MAX_BYTES].decode(errors="ignore").strip(" .")
