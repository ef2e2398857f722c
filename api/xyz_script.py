"""A1111's "X/Y/Z plot" script through ``/sdapi/v1/txt2img`` and ``img2img``: its ``script_args`` read as the values
of a tab's X/Y/Z plot panel (``pipelines/xyz.py``). A1111 names an axis by its index in its tab's part of the axis
list (1.10's, below); Easel also takes the axis's name, which does not change between A1111's versions."""

from __future__ import annotations

import csv
import io
from typing import Any, Callable

from .encoding import PayloadError

XYZ_SCRIPT = "x/y/z plot"

# A1111 1.10's axis list (scripts/xyz_grid.py) in its order; a tab marks an axis of that tab only
_A1111_AXES = (
    ("Nothing", None), ("Seed", None), ("Var. seed", None), ("Var. strength", None), ("Steps", None),
    ("Hires steps", "txt2img"), ("CFG Scale", None), ("Image CFG Scale", "img2img"), ("Prompt S/R", None),
    ("Prompt order", None), ("Sampler", "txt2img"), ("Hires sampler", "txt2img"), ("Sampler", "img2img"),
    ("Checkpoint name", None), ("Negative Guidance minimum sigma", None), ("Sigma Churn", None), ("Sigma min", None),
    ("Sigma max", None), ("Sigma noise", None), ("Schedule type", None), ("Schedule min sigma", None),
    ("Schedule max sigma", None), ("Schedule rho", None), ("Beta schedule alpha", None), ("Beta schedule beta", None),
    ("Eta", None), ("Clip skip", None), ("Denoising", None), ("Initial noise multiplier", None), ("Extra noise", None),
    ("Hires upscaler", "txt2img"), ("Cond. Image Mask Weight", "img2img"), ("VAE", None), ("Styles", None),
    ("UniPC Order", None), ("Face restore", None), ("Token merging ratio", None),
    ("Token merging ratio high-res", None), ("Always discard next-to-last sigma", None), ("SGM noise multiplier", None),
    ("Refiner checkpoint", None), ("Refiner switch at", None), ("RNG source", None), ("FP8 mode", None),
    ("Size", None),
)

# script_args after the three axes: A1111 1.8+ (with "Vary seeds"), and before it
_FLAGS = ("legend", "sub_images", "sub_grids", "keep_random")
_LAYOUTS = ((*_FLAGS, "vary_x", "vary_y", "vary_z", "margin", "csv_mode"), (*_FLAGS, "margin", "csv_mode"))
USAGE = ("X/Y/Z plot takes [x type, x values, x values dropdown, y type, y values, y values dropdown, z type, "
         "z values, z values dropdown, draw legend, include sub images, include sub grids, keep -1 for seeds, vary "
         "seeds for x, y, z, grid margins, use text inputs instead of dropdowns] (A1111's; the later ones may be left "
         "out; before A1111 1.8 without the vary seeds); a type is an index into the tab's axis list in "
         "/script-info or an axis's name")


def axis_names(tab: str) -> list[str]:
    """The axes of A1111's list for ``tab`` ("txt2img" or "img2img"), whose indexes its ``script_args`` use."""
    return [name for name, only in _A1111_AXES if only in (None, tab)]


def _csv_line(items: list) -> str:
    """A1111's ``list_to_csv_string``: a dropdown's values as the text an axis reads."""
    line = io.StringIO()
    csv.writer(line).writerow([str(item) for item in items])
    return line.getvalue().strip("\r\n")


def _axis(kind: Any, letter: str, tab: str) -> str:
    names = axis_names(tab)
    if kind is None:
        return "Nothing"
    if isinstance(kind, str):
        return kind
    if isinstance(kind, int) and not isinstance(kind, bool) and 0 <= kind < len(names):
        return names[kind]
    raise PayloadError("script_args", f"{letter} type {kind!r} is neither an axis's name nor an index into "
                                      f"{tab}'s axis list (0-{len(names) - 1}, /script-info).")


def plot_values(args: list, tab: str, checkpoint_name: Callable[[str], str]) -> dict[str, Any]:
    """A1111's ``script_args`` as the values of a tab's X/Y/Z plot panel (``xyz.from_values``); a checkpoint axis's
    values are A1111's checkpoint references (titles, names or hashes), made names by ``checkpoint_name``."""
    if len(args) < 9:
        raise PayloadError("script_args", USAGE + ".")
    layout = _LAYOUTS[0] if len(args) > 13 and isinstance(args[13], bool) else _LAYOUTS[1]
    given = {"legend": True, "margin": 0, **dict(zip(layout, args[9:]))}
    values = {"xyz": True, **{f"xyz_{name}": value for name, value in given.items() if name != "csv_mode"}}
    for letter, at in zip("xyz", (0, 3, 6)):
        text, dropdown = args[at + 1], args[at + 2]
        if not isinstance(text, (str, type(None))) or not isinstance(dropdown, (list, type(None))):
            raise PayloadError("script_args", f"{letter.upper()} values are a text and a list (its dropdown's). "
                                              f"{USAGE}.")
        axis = _axis(args[at], letter.upper(), tab)
        chosen = dropdown if dropdown and not given.get("csv_mode") else text or ""
        if axis in ("Checkpoint name", "Refiner checkpoint"):
            items = chosen if isinstance(chosen, list) else next(csv.reader([chosen], skipinitialspace=True))
            chosen = [checkpoint_name(item) if str(item).strip() not in ("", "None") else item for item in items]
        values |= {f"xyz_{letter}_type": axis, f"xyz_{letter}_values": _csv_line(chosen) if isinstance(chosen, list)
                   else chosen}
    return values
