"""Regional Prompter (hako-mikan's A1111 extension, its Matrix mode): parts of the picture guided by parts of the
prompt.

``prompts.regional_prompt`` reads the prompt's cells; here the *Divide ratio* sizes them and each becomes a
composable part (``composable.py``) whose weight is an ``Area``: 1 inside its cell and 0 elsewhere, so the UNet's
prediction in each cell is guided by that cell's text alone (the extension's *Latent* mode). A base prompt guides
the whole picture at the *Base ratio* (per cell, the cell's text at 1 - that); a common prompt is written in front
of every part. The areas are made at the size of the latents each UNet call gets, so hires fix's second pass
keeps them.

The ratio's grammar is the extension's. *Columns* splits the picture into columns: ``1,2,1`` is three, the middle
one twice as wide. With ``;`` it is two-dimensional: each ``;`` group is a row, its first number the row's height,
the rest its columns' widths (``1,2,1,1;2,4,6``: a row of three, then a row of two twice as high). *Rows* is the
same turned a quarter: ``1,2,1`` is three rows; in two dimensions ``,`` separates columns, each first the column's
width, then its rows' heights after ``;``. A prompt with ``ADDROW`` and ``ADDCOL`` gives the cells' structure
itself; one with ``BREAK`` alone fills the cells of one row (one column), or with a one-dimensional ratio and only
``ADDROW`` (``ADDCOL``) the rows (columns).
"""

from __future__ import annotations

import colorsys
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image, ImageDraw

from .errors import RequestError
from .prompts import RegionalPrompt, composable_parts, has_regions, regional_prompt

SPLITTINGS = ("Columns", "Rows")  # the extension's *Main Splitting*
_OLD_SPLITTINGS = {"Horizontal": "Columns", "Vertical": "Rows"}  # its earlier names, in older infotexts
CALC_MODE = "Latent"  # the extension's *Generation mode*; its Attention mode is not built (see the README)
DIVIDE_MODE = "Matrix"  # the extension's only mode here (its Mask and Prompt modes are not built)
_WORDS = {"Columns": ("ADDROW", "ADDCOL"), "Rows": ("ADDCOL", "ADDROW")}  # (outer, inner) keyword
_SEPARATORS = {"Columns": (";", ","), "Rows": (",", ";")}  # (outer, inner) in a two-dimensional ratio
_GROUPS = {"Columns": "rows", "Rows": "columns"}  # what the outer groups are
Box = tuple[float, float, float, float]  # top, bottom, left, right: shares of the picture


@dataclass(frozen=True)
class Area:
    """Where a composable part guides: ``weight`` inside each box, 0 elsewhere."""

    boxes: tuple[tuple[Box, float], ...]

    def map(self, height: int, width: int) -> torch.Tensor:
        """The weights on a ``height`` x ``width`` grid (latents), boxes cut as the extension cuts them."""
        weights = torch.zeros(height, width)
        for (top, bottom, left, right), weight in self.boxes:
            weights[int(height * top):int(height * bottom), int(width * left):int(width * right)] = weight
        return weights


@dataclass(frozen=True)
class RegionalSettings:
    """The extension's panel, as a request holds it."""

    splitting: str = "Columns"
    ratios: str = "1,1"
    base_ratios: str = "0.2"
    use_base: bool = False
    use_common: bool = False

    @classmethod
    def checked(cls, splitting: Any, ratios: Any, base_ratios: Any, use_base: Any,
                use_common: Any) -> "RegionalSettings":
        """The panel's values as widgets, JSON or an infotext give them, each checked (the ratios' grammar too,
        whatever the prompt)."""
        splitting = _OLD_SPLITTINGS.get(str(splitting), str(splitting))
        if splitting not in SPLITTINGS:
            raise RequestError(f"Regional Prompter's main splitting is {' or '.join(SPLITTINGS)}, got {splitting!r}.",
                               "rp_splitting")
        settings = cls(splitting, str(ratios or "").strip(), str(base_ratios or "").strip(), bool(use_base),
                       bool(use_common))
        settings.shape()
        settings._base_numbers()
        return settings

    def parts(self, prompt: str) -> list[tuple[str, float | Area]]:
        """``prompt``'s composable parts: each cell's text with its area, the base prompt's first; a prompt
        without the extension's keywords is an ordinary prompt (the extension stays off for it)."""
        if not has_regions(prompt):
            return composable_parts(prompt)
        text = self._grouped(regional_prompt(prompt, *_WORDS[self.splitting], self.use_common, self.use_base))
        boxes = self._boxes(text)
        cells = [cell for group in text.cells for cell in group]
        shares = self._base_shares(len(cells)) if text.base is not None else [0.0] * len(cells)
        with_common = (lambda part: f"{text.common}, {part}") if text.common else (lambda part: part)
        parts = [(with_common(cell), Area(((box, 1.0 - share),))) for cell, box, share in zip(cells, boxes, shares)]
        if text.base is not None:
            parts.insert(0, (with_common(text.base), Area(tuple(zip(boxes, shares)))))
        return parts

    def _grouped(self, text: RegionalPrompt) -> RegionalPrompt:
        """A prompt of ``BREAK``s alone fills a two-dimensional ratio's cells in order when it has as many (the
        extension puts ``ADDCOL`` and ``ADDROW`` in for them)."""
        own, cells = self.shape(), text.cells[0]
        if not text.flat or len(own) == 1 or sum(own) != len(cells):
            return text
        ends = [sum(own[:i + 1]) for i in range(len(own))]
        return replace(text, cells=tuple(cells[end - count:end] for end, count in zip(ends, own)), flat=False)

    def shape(self) -> list[int]:
        """The cells of each outer group that the ratio alone describes (one group in one dimension)."""
        return [len(inner) or 1 for _, inner in self._sizes(None)]

    def _base_numbers(self) -> list[float]:
        return _numbers(self.base_ratios or "0", "base ratio", "rp_base_ratios", (0.0, 1.0), "[,;]")

    def _base_shares(self, count: int) -> list[float]:
        shares = self._base_numbers()
        if len(shares) not in (1, count):
            raise RequestError(f"Regional Prompter's base ratio takes one number or one per region ({count}), got "
                               f"{self.base_ratios!r}.", "rp_base_ratios")
        return shares * count if len(shares) == 1 else shares

    def _sizes(self, shape: list[int] | None) -> list[tuple[float, list[float]]]:
        """(outer size, inner sizes) per outer group, read from the ratio for the prompt's ``shape`` (cells per
        group; None: the ratio's own shape). Inner sizes are empty where the cells share a group equally."""
        outer, inner = _SEPARATORS[self.splitting]
        if not self.ratios:
            return [(1.0, [])] * len(shape or [1])
        if ";" not in self.ratios:  # one dimension: the cells of one group, or groups of one cell each
            sizes = _numbers(self.ratios, "divide ratio", "rp_ratios", (0.0, None), ",")
            if shape is None or len(shape) == 1:
                found = [(1.0, sizes)]
            elif set(shape) == {1}:
                found = [(size, []) for size in sizes]
            else:
                raise RequestError(f"The prompt's {_GROUPS[self.splitting]} hold different numbers of regions: give "
                                   f"each its share with {outer!r} in the divide ratio (the first number the "
                                   "group's, then its regions').", "rp_ratios")
        else:
            groups = [_numbers(group, "divide ratio", "rp_ratios", (0.0, None), inner)
                      for group in self.ratios.split(outer)]
            found = [(group[0], group[1:]) for group in groups]
        made = [len(sizes) or 1 for _, sizes in found]
        if shape is not None and (len(made) != len(shape) or any(
                sizes and count != wanted for (_, sizes), count, wanted in zip(found, made, shape))):
            raise RequestError(f"The divide ratio {self.ratios!r} makes {_count(made)}, the prompt has "
                               f"{_count(shape)} (separated by BREAK, ADDCOL and ADDROW).", "rp_ratios")
        return found

    def _boxes(self, text: RegionalPrompt) -> list[Box]:
        """Each cell's box, in the prompt's order (outer groups, then their cells)."""
        sizes = self._sizes([len(group) for group in text.cells])
        boxes = []
        for (start, end), group, (_, inner) in zip(_spans([size for size, _ in sizes]), text.cells, sizes):
            for low, high in _spans(inner or [1.0] * len(group)):
                boxes.append((start, end, low, high) if self.splitting == "Columns" else (low, high, start, end))
        return boxes

    def sketch(self, width: int, height: int) -> tuple[Image.Image, str]:
        """The extension's *visualize and make template*: the ratio's regions numbered on a picture of the size,
        and a prompt template with the keywords in place."""
        outer_word, inner_word = _WORDS[self.splitting]
        shape = self.shape()
        cells = tuple(tuple(f"region {n}" for n in range(sum(shape[:i]), sum(shape[:i + 1])))
                      for i in range(len(shape)))
        boxes = self._boxes(RegionalPrompt("", None, cells, len(shape) == 1))
        picture = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(picture)
        for number, (top, bottom, left, right) in enumerate(boxes):
            hue = number * 0.381966 % 1.0  # golden-ratio steps: neighbours differ
            colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.35, 0.95))
            corner = (int(width * left), int(height * top))
            draw.rectangle([corner, (int(width * right) - 1, int(height * bottom) - 1)], fill=colour,
                           outline="black")
            draw.text((corner[0] + 4, corner[1] + 2), str(number), fill="black")
        template = f" {outer_word}\n".join(f" {inner_word}\n".join(group) for group in cells)
        for word, placeholder, used in (("ADDBASE", "base", self.use_base), ("ADDCOMM", "common", self.use_common)):
            if used:
                template = f"{placeholder} {word}\n{template}"
        return picture, template


def _spans(sizes: list[float]) -> list[tuple[float, float]]:
    """Cumulative shares: [1, 2, 1] -> [(0, .25), (.25, .75), (.75, 1)]."""
    total, start, spans = sum(sizes), 0.0, []
    for size in sizes:
        spans.append((start / total, (start + size) / total))
        start += size
    return spans


def _count(shape: list[int]) -> str:
    regions = sum(shape)
    text = f"{regions} region{'s' * (regions != 1)}"
    return text if len(shape) == 1 else f"{text} in {len(shape)} groups ({', '.join(map(str, shape))})"


def _numbers(text: str, label: str, field: str, bounds: tuple[float, float | None], separator: str) -> list[float]:
    """The numbers of a ratio text, each within ``bounds`` (low exclusive when there is no high)."""
    low, high = bounds
    numbers = []
    for item in re.split(separator, text):
        try:
            number = float(item)
            if not math.isfinite(number):
                raise ValueError
        except ValueError:
            raise RequestError(f"Regional Prompter's {label} {text!r} holds {item.strip()!r}, not a number.",
                               field) from None
        if not (low <= number <= high if high is not None else number > low):
            limits = f"between {low:g} and {high:g}" if high is not None else "over 0"
            raise RequestError(f"Regional Prompter's {label} numbers must be {limits}, got {item.strip()}.", field)
        numbers.append(number)
    return numbers
