"""Labelled picture grids (PIL only): column labels on top, row labels on the left, an optional title and margins
between cells, as A1111's X/Y/Z plot draws them. The comparison, the X/Y/Z plot, the prompt matrix and Loopback use
it; a batch's grid is the same without labels."""

from __future__ import annotations

import math
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

from .errors import RequestError
from .request import whole_number

PAD = 6
MAX_MARGIN = 500  # pixels between grid cells: A1111's slider


class Grid(NamedTuple):
    image: Image.Image
    infotext: str  # what it is saved with: its first picture's, as A1111's
    batch: bool = False  # a plain job's grid of its pictures, which A1111's return_grid shows or not
    basename: str = "grid"  # its file's name before the number, A1111's: grid-0000.png, xyz_grid-0000-5.png

    @property
    def named_in_full(self) -> bool:
        """Whether A1111 names it by the file name pattern too whatever its grid_extended_filename: a script's
        (the X/Y/Z plot's, the prompt matrix's) is."""
        return self.basename != "grid"


class BatchLayout(NamedTuple):
    """A1111's settings for the grid of a job's pictures."""
    rows: int = -1  # n_rows: -1 round(sqrt(n)), 0 the batch size
    no_empty_spots: bool = False  # grid_prevent_empty_spots: with -1, the most rows up to sqrt(n) that divide n
    single: bool = False  # a grid of one picture too (grid_only_if_multiple off)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def labelled_grid(rows: list[list[Image.Image | None]], column_labels: list[str], row_labels: list[str] | None = None,
                  title: str = "", margin: int = 0) -> Image.Image:
    """``rows`` of pictures (None leaves a blank cell) in cells the size of the largest picture, widened to fit
    the column labels, if any (pictures centred), ``margin`` pixels of white between cells (A1111's "Grid margins");
    labels may span several lines."""
    cells = [image for row in rows for image in row if image is not None]
    cell_w = max((image.width for image in cells), default=64)
    cell_h = max((image.height for image in cells), default=64)
    font = _font(max(12, min(28, cell_w // 12)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cell_w = max([cell_w] + [_text_size(measure, t, font)[0] + 2 * PAD for t in column_labels])  # labels fit
    label_h = 0  # no labels (a batch's grid): no room for them
    if column_labels:
        label_h = max((_text_size(measure, t, font)[1] for t in column_labels if t), default=0) + 2 * PAD
    left = max((_text_size(measure, t, font)[0] for t in row_labels or [] if t), default=-2 * PAD) + 2 * PAD
    title_h = _text_size(measure, title, font)[1] + 2 * PAD if title else 0
    columns = max(len(column_labels), max(len(row) for row in rows))
    step_x, step_y = cell_w + margin, cell_h + margin
    grid = Image.new("RGB", (left + columns * step_x - margin, title_h + label_h + len(rows) * step_y - margin),
                     "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.multiline_text((PAD, PAD), title, fill="black", font=font)
    for x, text in enumerate(column_labels):
        width = _text_size(draw, text, font)[0]
        draw.multiline_text((left + x * step_x + (cell_w - width) // 2, title_h + PAD), text, fill="black",
                            font=font, align="center")
    for y, row in enumerate(rows):
        top = title_h + label_h + y * step_y
        if row_labels:
            height = _text_size(draw, row_labels[y], font)[1]
            draw.multiline_text((PAD, top + (cell_h - height) // 2), row_labels[y], fill="black", font=font)
        for x, image in enumerate(row):
            if image is not None:
                grid.paste(image.convert("RGB"), (left + x * step_x + (cell_w - image.width) // 2, top))
    return grid


def batch_grid(images: list[Image.Image], layout: BatchLayout = BatchLayout(), batch_size: int = 1) -> Image.Image:
    """A1111's grid of a job's pictures, unlabelled, in order: the rows ``layout`` says, as many columns as they
    need."""
    rows = batch_size if layout.rows == 0 else layout.rows if layout.rows > 0 else round(len(images) ** 0.5)
    if layout.rows < 0 and layout.no_empty_spots:
        rows = next(count for count in range(math.isqrt(len(images)), 0, -1) if len(images) % count == 0)
    rows = max(1, min(rows, len(images)))
    columns = -(-len(images) // rows)
    return labelled_grid([images[row * columns:(row + 1) * columns] for row in range(rows)], [])


def grid_margin(value, field: str) -> int:
    """A grid margin from a form or an API call: whole pixels, 0 to ``MAX_MARGIN`` (A1111's slider)."""
    margin = whole_number(value, "Grid margins", field)
    if not 0 <= margin <= MAX_MARGIN:
        raise RequestError(f"Grid margins go from 0 to {MAX_MARGIN} pixels, got {margin}.", field)
    return margin
