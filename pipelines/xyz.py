"""The X/Y/Z plot (A1111's script): up to three axes of values over one request, a labelled grid per Z value.

Axis values use A1111's syntax: comma lists (quoted with ``"`` when a value holds a comma), and for numbers
ranges ``1-5`` (every whole number), ``1-10 (+2)`` (a step), ``1-10 [5]`` (that many values, evenly spread).
Cells run with the model axis outermost, so each model is loaded once however the axes are arranged. A seed
of -1 is drawn once, so every cell shares it unless the seed is an axis.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, replace
from itertools import product
from typing import Any, Callable, Iterator

from PIL import Image

from .engine import GenerationResult, Progress
from .errors import RequestError
from .grid import labelled_grid
from .infotext import with_params
from .request import GenerationRequest

NUMBER = r"[+-]?\s*\d+(?:\.\d*)?"
_RANGE = re.compile(rf"^\s*({NUMBER})\s*-\s*({NUMBER})\s*(?:\(\s*({NUMBER})\s*\)|\[\s*(\d+)\s*\])?\s*$")
_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::[^>]*)?>")


def _lora_weight(request: GenerationRequest, weight: float) -> dict:
    if not _LORA_TAG.search(request.prompt):
        raise RequestError("The LoRA weight axis needs a <lora:name:weight> tag in the prompt.", "prompt")
    return {"prompt": _LORA_TAG.sub(lambda m: f"<lora:{m.group(1)}:{weight:g}>", request.prompt)}


def _control_weight(request: GenerationRequest, weight: float) -> dict:
    if not request.active_controls:
        raise RequestError("The ControlNet weight axis needs an enabled ControlNet unit.", "controlnets")
    return {"controlnets": tuple(replace(u, weight=weight) if u.enabled else u for u in request.controlnets)}


def _size(request: GenerationRequest, value: str) -> dict:
    parts = value.lower().replace(" ", "").split("x")
    try:
        width, height = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        width = None
    if width is None:
        raise RequestError(f"A size must look like 512x768 (or 512), got {value!r}.", "xyz")
    return {"width": width, "height": height}


@dataclass(frozen=True)
class Axis:
    label: str  # as A1111 names it
    kind: type  # int, float or str: how values are read
    apply: Callable[[GenerationRequest, Any], dict]  # the request fields a value changes
    show: Callable[[Any], str] = str  # the grid label of a value


def _field(name: str) -> Callable[[GenerationRequest, Any], dict]:
    return lambda request, value: {name: value}


AXES = {axis.label: axis for axis in (
    Axis("Nothing", str, lambda request, value: {}),
    Axis("Checkpoint name", str, _field("model")),
    Axis("Seed", int, _field("seed"), lambda v: f"Seed: {v}"),
    Axis("Var. seed", int, _field("subseed"), lambda v: f"Var. seed: {v}"),
    Axis("Var. strength", float, _field("subseed_strength"), lambda v: f"Var. strength: {v:g}"),
    Axis("Steps", int, _field("steps"), lambda v: f"Steps: {v}"),
    Axis("CFG Scale", float, _field("cfg_scale"), lambda v: f"CFG Scale: {v:g}"),
    Axis("Sampler", str, _field("sampler")),
    Axis("Schedule type", str, _field("scheduler"), lambda v: f"Schedule type: {v}"),
    Axis("Clip skip", int, _field("clip_skip"), lambda v: f"Clip skip: {v}"),
    Axis("Prompt S/R", str, lambda request, value: {}),  # done in ``apply`` (it needs the first value)
    Axis("Styles", str, lambda request, value: {"styles": (*request.styles, value)}),
    Axis("LoRA weight", float, _lora_weight, lambda v: f"LoRA weight: {v:g}"),
    Axis("Size", str, _size),
    Axis("Denoising", float, _field("denoising_strength"), lambda v: f"Denoising: {v:g}"),
    Axis("Hires steps", int, _field("hr_second_pass_steps"), lambda v: f"Hires steps: {v}"),
    Axis("Hires upscaler", str, _field("hr_upscaler")),
    Axis("ControlNet weight", float, _control_weight, lambda v: f"ControlNet weight: {v:g}"),
    Axis("Refiner checkpoint", str, _field("refiner_checkpoint"), lambda v: f"Refiner: {v}"),
    Axis("Refiner switch at", float, _field("refiner_switch_at"), lambda v: f"Refiner switch at: {v:g}"),
)}


def _number_range(match: re.Match, kind: type) -> list:
    start, end = (float(g.replace(" ", "")) for g in match.group(1, 2))
    if match.group(4):  # [count]
        count = int(match.group(4))
        values = [start + (end - start) * i / (count - 1) for i in range(count)] if count > 1 else [start]
    else:
        step = float(match.group(3).replace(" ", "")) if match.group(3) else (1.0 if end >= start else -1.0)
        if step == 0 or (end - start) * step < 0:
            raise RequestError(f"The range {match.group(0).strip()!r} never reaches its end.", "xyz")
        values = [start + i * step for i in range(math.floor((end - start) / step + 1e-9) + 1)]
    return [int(v) if kind is int else round(v, 6) for v in values]


def parse_values(axis: str, text: str) -> list:
    """An axis's values from A1111's syntax."""
    spec = AXES.get(axis)
    if spec is None:
        raise RequestError(f"Unknown axis {axis!r}. Choose one of: {', '.join(AXES)}.", "xyz")
    if axis == "Nothing":
        return [None]
    items = [item.strip() for row in csv.reader([text], skipinitialspace=True) for item in row if item.strip()]
    if not items:
        raise RequestError(f"The {axis} axis has no values.", "xyz")
    if spec.kind is str:
        return items
    values = []
    for item in items:
        match = _RANGE.match(item)
        if match:
            values += _number_range(match, spec.kind)
            continue
        try:
            values.append(spec.kind(float(item)))
        except ValueError:
            raise RequestError(f"{axis}: {item!r} is not a number or a range.", "xyz") from None
    return values


def apply(request: GenerationRequest, axis: str, value: Any, values: list) -> GenerationRequest:
    """``request`` with one axis value applied (validated as any request is)."""
    if axis == "Nothing":
        return request
    if axis == "Prompt S/R":
        search = values[0]
        if search not in request.prompt and search not in request.negative_prompt:
            raise RequestError(f"Prompt S/R: {search!r} is not in the prompt or negative prompt.", "xyz")
        return replace(request, prompt=request.prompt.replace(search, value),
                       negative_prompt=request.negative_prompt.replace(search, value))
    return replace(request, **AXES[axis].apply(request, value))


@dataclass
class Plot:
    """The cells of a plot; ``order`` runs them with the model axis outermost."""

    axes: list[tuple[str, list]]  # (axis, values) for X, Y, Z
    cells: dict[tuple[int, int, int], GenerationRequest]
    texts: tuple[str, str, str] = ("", "", "")  # the values as typed, for X, Y, Z

    @property
    def order(self) -> list[tuple[int, int, int]]:
        model_axis = next((i for i, (axis, _) in enumerate(self.axes) if axis == "Checkpoint name"), None)
        return sorted(self.cells, key=lambda key: (key[model_axis] if model_axis is not None else 0, key[::-1]))

    def labels(self, which: int) -> list[str]:
        axis, values = self.axes[which]
        return ["" if axis == "Nothing" else AXES[axis].show(v) for v in values]


def plan(request: GenerationRequest, axes: list[tuple[str, str]]) -> Plot:
    """The plot's cells for up to three (axis, values text) pairs: X, Y, Z."""
    axes = (list(axes) + [("Nothing", "")] * 3)[:3]
    parsed = [(axis, parse_values(axis, text)) for axis, text in axes]
    parsed = [(axis, [replace(request, seed=v).with_seed().seed for v in values] if axis == "Seed" else values)
              for axis, values in parsed]  # -1 drawn once, shared by its row or column
    used = [axis for axis, _ in parsed if axis != "Nothing"]
    if len(used) != len(set(used)):
        raise RequestError("Each axis type may be used once.", "xyz")
    if math.prod(len(values) for _, values in parsed) > 256:
        raise RequestError("An X/Y/Z plot may have up to 256 cells.", "xyz")
    request = replace(request.with_seed(), batch_size=1, batch_count=1)
    cells = {}
    for key in product(*(range(len(values)) for _, values in parsed)):
        cell = request
        for (axis, values), i in zip(parsed, key):
            cell = apply(cell, axis, values[i], values)
        cells[key] = cell
    return Plot(parsed, cells, tuple(text for _, text in axes))


@dataclass
class PlotResult:
    plot: Plot
    images: dict[tuple[int, int, int], Image.Image]
    infotexts: dict[tuple[int, int, int], str]
    interrupted: bool = False

    def grids(self, margin: int = 0) -> list[Image.Image]:
        """One labelled grid per Z value (X across, Y down), titled with the Z value, ``margin`` pixels between
        cells."""
        (_, xs), (_, ys), (_, zs) = self.plot.axes
        x_labels, y_labels, z_labels = (self.plot.labels(i) for i in range(3))
        return [labelled_grid([[self.images.get((x, y, z)) for x in range(len(xs))] for y in range(len(ys))],
                              x_labels, y_labels if any(y_labels) else None, z_labels[z], margin)
                for z in range(len(zs))]

    def grid_infotexts(self) -> list[str]:
        """Each grid's parameters as A1111 saves them: its first cell's, then ``Script: X/Y/Z plot`` and each axis's
        type and values as typed (``X Type``, ``X Values``; for seeds also ``Fixed X Values``, the seeds run)."""
        extra = {"Script": "X/Y/Z plot"}
        for letter, (axis, values), text in zip("XYZ", self.plot.axes, self.plot.texts):
            if axis != "Nothing":
                extra |= {f"{letter} Type": axis, f"{letter} Values": text}
                if axis in ("Seed", "Var. seed"):
                    extra[f"Fixed {letter} Values"] = ", ".join(str(value) for value in values)
        (_, xs), (_, ys), (_, zs) = self.plot.axes
        firsts = [next((self.infotexts[key] for key in product(range(len(xs)), range(len(ys)), [z])
                        if key in self.infotexts), None) for z in range(len(zs))]
        return [with_params(first, extra) if first else "" for first in firsts]


@dataclass
class PlotProgress:
    cell: int  # from 0, in run order
    cells: int
    step: Progress

    @property
    def fraction(self) -> float:
        return (self.cell + self.step.fraction) / self.cells


def run_plot(stream: Callable[..., Iterator], plot: Plot, *, owner: Any = None,
             save: bool = True) -> Iterator[PlotProgress | PlotResult]:
    """Run every cell through ``stream`` (``Services.stream``) in ``plot.order``; progress, then the result."""
    result = PlotResult(plot, {}, {})
    order = plot.order
    for number, key in enumerate(order):
        for event in stream(plot.cells[key], owner=owner, save=save):
            if isinstance(event, GenerationResult):
                result.images[key], result.infotexts[key] = event.images[0], event.infotexts[0]
                result.interrupted = event.interrupted
            else:
                yield PlotProgress(number, len(order), event)
        if result.interrupted:
            break
    yield result

