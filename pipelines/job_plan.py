"""What a tab's values run as: a job per line of a prompt list, a job per combination of a prompt matrix (and its
grid after them), or the one job (Loopback and SD upscale, img2img's scripts, run their passes inside it; the X/Y/Z
plot runs its cells from it: ``Plan.xyz``). A1111 offers these as scripts, one at a time. The grids that lead a gallery are made here too: a matrix's, Loopback's, and
a plain job's of its pictures (A1111's, with its ``n_rows``; its ``return_grid`` decides whether a gallery shows it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import prompt_lines, prompt_matrix, xyz
from .errors import RequestError
from .grid import BatchLayout, Grid, batch_grid, labelled_grid
from .img2img_scripts import loopback_history
from .request import MAX_SEED


@dataclass(frozen=True)
class Plan:
    values: dict[str, Any]
    jobs: list[dict[str, Any]]
    script: str | None = None  # the one script the values tick, by name
    matrix: prompt_matrix.PromptMatrix | None = None
    xyz: tuple | None = None  # the X/Y/Z plot's axes and options (``xyz.from_values``), run over the one job


def plan(values: dict[str, Any]) -> Plan:
    matrix, plot = prompt_matrix.from_values(values), xyz.from_values(values)
    scripts = [name for name, on in (("a prompt list", (values.get("prompt_lines") or "").strip()),
                                     ("a prompt matrix", matrix), ("the X/Y/Z plot", plot),
                                     ("Loopback", values.get("loopback")), ("SD upscale", values.get("sd_upscale")))
               if on]
    if len(scripts) > 1:
        raise RequestError(f"{', '.join(scripts[:-1])} and {scripts[-1]} cannot run together (A1111 runs one script "
                           "at a time): turn all but one off.", "script_name")
    script = scripts[0] if scripts else None
    if matrix is None:
        return Plan(values, prompt_lines.expand(values), script, xyz=plot)
    return Plan(values, matrix.jobs(values), script, matrix)


def grids(plans: list[Plan], results: list, batch: bool = True, layout: BatchLayout = BatchLayout()) -> list[Grid]:
    """Each matrix's grid, each Loopback job's (``img2img_scripts.loopback_history``) and, with ``batch``, a plain
    job's of its two or more pictures (or one, with ``layout.single``) as ``layout`` says (A1111's, which its prompt
    list, SD upscale and img2img batch folders leave out: only one plan runs no script), from the jobs' ``results``
    in order (fewer after an interrupt)."""
    made, start = [], 0
    for each in plans:
        taken = results[start:start + len(each.jobs)]
        start += len(each.jobs)
        if not taken or not taken[0].infotexts:
            continue
        if batch and each.script is None and len(plans) == 1 and len(taken[0].images) > 1 - layout.single:
            grid = batch_grid(taken[0].images, layout, taken[0].request.batch_size)
            made.append(Grid(grid, taken[0].infotexts[0], batch=True))
        elif each.matrix is not None:
            pictures = [image for result in taken for image in result.images]
            made.append(Grid(each.matrix.grid(each.values, pictures), taken[0].infotexts[0], basename="prompt_matrix"))
        elif taken[0].request.loopback:
            result, request = taken[0], taken[0].request
            offsets = [(seed - request.seed) % (MAX_SEED + 1) for seed in result.seeds]
            shown = loopback_history(offsets, request.loopback_loops, request.loopback_strengths)
            if len(shown) > 1:
                grid = labelled_grid([[result.images[index] for index, _ in shown]], [label for _, label in shown])
                made.append(Grid(grid, result.infotexts[0]))
    return made


def shown(grids: list[Grid], return_grid: bool) -> list[Grid]:
    """The grids a gallery or an API answer leads with: a plain job's only with A1111's ``return_grid``, the
    scripts' always (A1111's scripts put theirs in whatever the setting)."""
    return [grid for grid in grids if return_grid or not grid.batch]
