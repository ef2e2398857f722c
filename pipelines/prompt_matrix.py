"""A1111's "Prompt matrix": a picture for every combination of a prompt's optional parts, and the grid that labels them.

The prompt (or, as a "negative" matrix, the negative prompt) is split at "|" (outside Dynamic Prompts' braces, so a
template's ``{a|b}`` stays whole in its part): the first part is in every picture, each other part in or out, so n
optional parts make 2^n pictures; picture i holds part k when bit k of i is set (A1111's order). The optional parts go after the first (``position`` "end") or before it ("start"), joined by ", "
or " ". Each picture is a job of one image; they share the seed, or with ``different_seeds`` picture i takes
seed + i. The grid has the first half of the optional parts across and the rest down (A1111's 2^(n // 2) rows),
each label saying which parts are in (+) and out (-), with ``margin`` pixels between the cells.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .errors import RequestError
from .grid import grid_margin, labelled_grid
from .prompts import matrix_parts
from .request import MAX_SEED, whole_number

POSITIONS = ("end", "start")
JOINERS = {"comma": ", ", "space": " "}
PROMPT_TYPES = ("positive", "negative")  # A1111's "Select prompt": which prompt holds the parts
MAX_PARTS = 8  # 256 pictures


@dataclass(frozen=True)
class PromptMatrix:
    position: str = "end"
    negative: bool = False
    joiner: str = "comma"
    different_seeds: bool = False
    margin: int = 0

    @property
    def field(self) -> str:
        return "negative_prompt" if self.negative else "prompt"

    def parts(self, values: dict[str, Any]) -> list[str]:
        parts = [part.strip().strip(",").strip() for part in matrix_parts(str(values.get(self.field) or ""))]
        if len(parts) < 2:
            where = "negative prompt" if self.negative else "prompt"
            raise RequestError(f"The prompt matrix needs optional parts in the {where}, after a |: "
                               "\"a house|at night|in snow\" makes 4 pictures.", self.field)
        if len(parts) - 1 > MAX_PARTS:
            raise RequestError(f"The prompt matrix takes at most {MAX_PARTS} optional parts ({2 ** MAX_PARTS} "
                               f"pictures), got {len(parts) - 1}.", self.field)
        return parts

    def jobs(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        """A job (of one picture) per combination, in A1111's order."""
        if self.position not in POSITIONS or self.joiner not in JOINERS:
            raise RequestError(f"Place the parts at start or end, joined by comma or space; got {self.position!r}, "
                               f"{self.joiner!r}.", "prompt_matrix")
        first, *optional = self.parts(values)
        seed = whole_number(values.get("seed", -1), "Seed", "seed")
        seed = random.randint(0, MAX_SEED) if seed == -1 else seed  # one seed for the grid, as A1111 fixes it
        jobs = []
        for index in range(2 ** len(optional)):
            chosen = [part for bit, part in enumerate(optional) if index >> bit & 1]
            text = JOINERS[self.joiner].join([*chosen, first] if self.position == "start" else [first, *chosen])
            jobs.append({**values, self.field: text, "seed": (seed + index) % (MAX_SEED + 1) if self.different_seeds
                         else seed, "batch_size": 1, "batch_count": 1})
        return jobs

    def grid(self, values: dict[str, Any], images: list[Image.Image]) -> Image.Image:
        """The labelled grid of the jobs' pictures (in ``jobs``' order; missing ones, after an interrupt, blank)."""
        optional = self.parts(values)[1:]
        across, down = optional[:len(optional) - len(optional) // 2], optional[len(optional) - len(optional) // 2:]

        def label(parts: list[str], index: int) -> str:
            return "\n".join(("+ " if index >> bit & 1 else "- ") + part for bit, part in enumerate(parts))

        columns = 2 ** len(across)
        cells = [*images, *[None] * (2 ** len(optional) - len(images))]
        return labelled_grid([cells[row * columns:(row + 1) * columns] for row in range(2 ** len(down))],
                             [label(across, x) for x in range(columns)],
                             [label(down, y) for y in range(2 ** len(down))] if down else None, margin=self.margin)


def from_values(values: dict[str, Any]) -> PromptMatrix | None:
    """The tab's prompt matrix (``prompt_matrix`` on, with ``matrix_position``, ``matrix_negative``,
    ``matrix_joiner``, ``matrix_different_seeds``, ``matrix_margin``), or None."""
    if not values.get("prompt_matrix"):
        return None
    return PromptMatrix(values.get("matrix_position") or "end", bool(values.get("matrix_negative")),
                        values.get("matrix_joiner") or "comma", bool(values.get("matrix_different_seeds")),
                        grid_margin(values.get("matrix_margin") or 0, "matrix_margin"))
