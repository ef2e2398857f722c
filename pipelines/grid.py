"""Labelled picture grids (PIL only): column labels on top, row labels on the left, an optional title, as
A1111's X/Y/Z plot draws them. The comparison and the X/Y/Z plot both use it."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

PAD = 6


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def labelled_grid(rows: list[list[Image.Image | None]], column_labels: list[str], row_labels: list[str] | None = None,
                  title: str = "") -> Image.Image:
    """``rows`` of pictures (None leaves a blank cell) in cells the size of the largest picture, widened to fit
    the column labels (pictures centred); labels may span several lines."""
    cells = [image for row in rows for image in row if image is not None]
    cell_w = max((image.width for image in cells), default=64)
    cell_h = max((image.height for image in cells), default=64)
    font = _font(max(12, min(28, cell_w // 12)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cell_w = max([cell_w] + [_text_size(measure, t, font)[0] + 2 * PAD for t in column_labels])  # labels fit
    label_h = max((_text_size(measure, t, font)[1] for t in column_labels if t), default=0) + 2 * PAD
    left = max((_text_size(measure, t, font)[0] for t in row_labels or [] if t), default=-2 * PAD) + 2 * PAD
    title_h = _text_size(measure, title, font)[1] + 2 * PAD if title else 0
    columns = max(len(column_labels), max(len(row) for row in rows))
    grid = Image.new("RGB", (left + columns * cell_w, title_h + label_h + len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.multiline_text((PAD, PAD), title, fill="black", font=font)
    for x, text in enumerate(column_labels):
        width = _text_size(draw, text, font)[0]
        draw.multiline_text((left + x * cell_w + (cell_w - width) // 2, title_h + PAD), text, fill="black", font=font,
                            align="center")
    for y, row in enumerate(rows):
        top = title_h + label_h + y * cell_h
        if row_labels:
            height = _text_size(draw, row_labels[y], font)[1]
            draw.multiline_text((PAD, top + (cell_h - height) // 2), row_labels[y], fill="black", font=font)
        for x, image in enumerate(row):
            if image is not None:
                grid.paste(image.convert("RGB"), (left + x * cell_w + (cell_w - image.width) // 2, top))
    return grid
