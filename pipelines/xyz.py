"""The X/Y/Z plot (A1111's script): up to three axes of values over one request, a labelled grid per Z value.

Axis values use A1111's syntax: comma lists (quoted with ``"`` when a value holds a comma), and for numbers
ranges ``1-5`` (every whole number), ``1-10 (+2)`` (a step), ``1-10 [5]`` (that many values, evenly spread).
Cells run with the model axis outermost, so each model is loaded once however the axes are arranged. A seed
of -1 is drawn once, so every cell shares it unless the seed is an axis (A1111's options: keep -1, so that every
cell draws its own, or vary the seed along an axis). The result is answered as A1111's script answers it: the grid
(the Z values' grids side by side), then each Z value's grid and each cell's picture when asked for.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field, replace
from itertools import permutations, product
from typing import Any, Callable, Iterator

from PIL import Image

from .cfg_rescale import RESCALE
from .deep_shrink import BLOCK as DS_BLOCK, NUMBERS as DS_NUMBERS
from .engine import GenerationResult, Progress
from .errors import RequestError
from .freeu import SETTINGS as FREEU_SETTINGS
from .grid import Grid, grid_margin, labelled_grid
from .infotext import with_params
from .negative_guidance import NGMS, SKIP_EARLY
from .pag import PAG_SETTINGS
from .sag import SAG_SETTINGS
from .request import MAX_SEED, GenerationRequest
from .sampler_parameters import ETA_ANCESTRAL, ETA_DDIM, RHO, S_CHURN, S_NOISE, S_TMAX, S_TMIN, SIGMA_MAX, SIGMA_MIN
from .variation import EXTRA_NOISE

NUMBER = r"[+-]?\s*\d+(?:\.\d*)?"
_RANGE = re.compile(rf"^\s*({NUMBER})\s*-\s*({NUMBER})\s*(?:\(\s*({NUMBER})\s*\)|\[\s*(\d+)\s*\])?\s*$")
_LORA_TAG = re.compile(r"<(lora|lyco):([^:>]+)(?::[^>]*)?>")
BASENAME = "xyz_grid"  # the grids' file names, A1111's: xyz_grid-0000-5.png


def _lora_weight(request: GenerationRequest, weight: float) -> dict:
    if not _LORA_TAG.search(request.prompt):
        raise RequestError("The LoRA weight axis needs a <lora:name:weight> tag in the prompt.", "prompt")
    return {"prompt": _LORA_TAG.sub(lambda m: f"<{m.group(1)}:{m.group(2)}:{weight:g}>", request.prompt)}


def _control_weight(request: GenerationRequest, weight: float) -> dict:
    if not request.active_controls:
        raise RequestError("The ControlNet weight axis needs an enabled ControlNet unit.", "controlnets")
    return {"controlnets": tuple(replace(u, weight=weight) if u.enabled else u for u in request.controlnets)}


def _prompt_order(request: GenerationRequest, order: tuple[str, ...]) -> dict:
    """A1111's "Prompt order": the axis's words, wherever they stand in the prompt, put back in ``order``."""
    missing = [word for word in order if word not in request.prompt]
    if missing:
        raise RequestError(f"Prompt order: {missing[0]!r} is not in the prompt.", "xyz")
    prompt, parts = request.prompt, []
    for word in sorted(order, key=request.prompt.find):
        at = prompt.find(word)
        parts.append(prompt[:at])
        prompt = prompt[at + len(word):]
    return {"prompt": "".join(part + word for part, word in zip(parts, order)) + prompt}


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
    kind: type  # int, float, str, or tuple (every order of the words typed): how values are read
    apply: Callable[[GenerationRequest, Any], dict]  # the request fields a value changes
    show: Callable[[Any], str] = str  # the grid label of a value


def _field(name: str, **also: Any) -> Callable[[GenerationRequest, Any], dict]:
    """The axis's value into the request field ``name`` (and ``also``'s fields: FreeU's factors turn it on)."""
    return lambda request, value: {**also, name: value}


def _labelled(label: str, spec: str = "g") -> Callable[[Any], str]:
    """A grid label: the axis's name and the value (``spec``: a number's format; "d" for whole ones, "s" for text)."""
    return lambda value: f"{label}: {value:{spec}}"


AXES = {axis.label: axis for axis in (
    Axis("Nothing", str, lambda request, value: {}),
    Axis("Checkpoint name", str, _field("model")),
    Axis("Seed", int, _field("seed"), _labelled("Seed", "d")),
    Axis("Var. seed", int, _field("subseed"), _labelled("Var. seed", "d")),
    Axis("Var. strength", float, _field("subseed_strength"), _labelled("Var. strength")),
    Axis("Steps", int, _field("steps"), _labelled("Steps", "d")),
    Axis("CFG Scale", float, _field("cfg_scale"), _labelled("CFG Scale")),
    Axis("Sampler", str, _field("sampler")),
    Axis("Schedule type", str, _field("scheduler"), _labelled("Schedule type", "s")),
    Axis("Clip skip", int, _field("clip_skip"), _labelled("Clip skip", "d")),
    Axis("Prompt S/R", str, lambda request, value: {}),  # done in ``apply`` (it needs the first value)
    Axis("Prompt order", tuple, _prompt_order, ", ".join),  # each value an order of the words typed
    Axis("Styles", str, lambda request, value: {"styles": (*request.styles, value)}),
    Axis("LoRA weight", float, _lora_weight, _labelled("LoRA weight")),
    Axis("Size", str, _size),
    Axis("Denoising", float, _field("denoising_strength"), _labelled("Denoising")),
    Axis("Initial noise multiplier", float, _field("initial_noise_multiplier"), _labelled("Initial noise multiplier")),
    Axis(EXTRA_NOISE.key, float, _field(EXTRA_NOISE.field), _labelled(EXTRA_NOISE.key)),
    Axis("Hires steps", int, _field("hr_second_pass_steps"), _labelled("Hires steps", "d")),
    Axis("Hires sampler", str, _field("hr_sampler_name")),
    Axis("Hires upscaler", str, _field("hr_upscaler")),
    Axis("ControlNet weight", float, _control_weight, _labelled("ControlNet weight")),
    Axis("Refiner checkpoint", str, _field("refiner_checkpoint"), _labelled("Refiner", "s")),
    Axis("Refiner switch at", float, _field("refiner_switch_at"), _labelled("Refiner switch at")),
    *(Axis(setting.label, float, _field(setting.field), _labelled(setting.label))
      for setting in (RESCALE, *PAG_SETTINGS, NGMS, SKIP_EARLY)),
    *(Axis(setting.key, float, _field(setting.field, freeu=True), _labelled(setting.key))
      for setting in FREEU_SETTINGS),
    # the SAG extension's, by its infotext keys
    *(Axis(setting.key, float, _field(setting.field), _labelled(setting.key)) for setting in SAG_SETTINGS),
    # Forge's Kohya HRFix (Deep Shrink): its numbers turn it on
    *(Axis(f"[Deep Shrink] {setting.label}", int if setting is DS_BLOCK else float,
           _field(setting.field, deep_shrink=True), _labelled(setting.label, "d" if setting is DS_BLOCK else "g"))
      for setting in DS_NUMBERS),
    # the Dynamic Thresholding extension's: a mimic scale turns it on, 0 off
    Axis("[DynThres] Mimic Scale", float, lambda request, value: {"dynamic_thresholding": bool(value),
                                                                   **({"dt_mimic_scale": value} if value else {})},
         _labelled("Mimic scale")),
    *(Axis(f"[DynThres] {label}", kind, _field(name), _labelled(label, "s" if kind is str else "g"))
      for label, kind, name in (("Threshold Percentile", float, "dt_threshold_percentile"),
                                ("Mimic Scheduler", str, "dt_mimic_mode"), ("CFG Scheduler", str, "dt_cfg_mode"),
                                ("Interpolate Phi", float, "dt_interpolate_phi"))),
    # A1111's: eta is whichever the sampler reads; "Sigma min" and "Sigma max" bound the churn
    Axis("Eta", float, lambda request, value: {ETA_DDIM.field: value, ETA_ANCESTRAL.field: value}, _labelled("Eta")),
    *(Axis(name, float, _field(setting.field), _labelled(name)) for name, setting in (
        ("Sigma Churn", S_CHURN), ("Sigma min", S_TMIN), ("Sigma max", S_TMAX), ("Sigma noise", S_NOISE),
        ("Schedule min sigma", SIGMA_MIN), ("Schedule max sigma", SIGMA_MAX), ("Schedule rho", RHO))),
    Axis("UniPC Order", int, _field("uni_pc_order"), _labelled("UniPC Order", "d")),
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
    if spec.kind is tuple:
        return list(permutations(items))
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


@dataclass(frozen=True)
class PlotOptions:
    """A1111's options of the plot."""

    legend: bool = True  # "Draw legend": the axes' values over the columns, beside the rows, over each Z grid
    keep_random: bool = False  # "Keep -1 for seeds": every cell draws its own seed
    vary_seeds: tuple[bool, bool, bool] = (False, False, False)  # "Vary seeds for X/Y/Z": + the cell's index there
    sub_images: bool = False  # "Include Sub Images": every cell's picture after the grids
    sub_grids: bool = False  # "Include Sub Grids": each Z value's grid after the grid of them all
    margin: int = 0  # "Grid margins (px)"


def from_values(values: dict[str, Any]) -> tuple[list[tuple[str, str]], PlotOptions] | None:
    """The plot a tab's values (or an API request's script arguments) ask for with ``xyz`` ticked: its axes (type,
    values text) and options, from ``xyz_x_type``, ``xyz_x_values``, ... ``xyz_margin``; None when not ticked."""
    if not values.get("xyz"):
        return None
    axes = [(values.get(f"xyz_{letter}_type") or "Nothing", values.get(f"xyz_{letter}_values") or "")
            for letter in "xyz"]
    vary = tuple(bool(values.get(f"xyz_vary_{letter}")) for letter in "xyz")
    options = PlotOptions(legend=bool(values.get("xyz_legend", True)), keep_random=bool(values.get("xyz_keep_random")),
                          vary_seeds=vary, sub_images=bool(values.get("xyz_sub_images")),
                          sub_grids=bool(values.get("xyz_sub_grids")),
                          margin=grid_margin(values.get("xyz_margin") or 0, "xyz_margin"))
    return axes, options


@dataclass
class Plot:
    """The cells of a plot; ``order`` runs them with the model axis outermost."""

    axes: list[tuple[str, list]]  # (axis, values) for X, Y, Z
    cells: dict[tuple[int, int, int], GenerationRequest]
    texts: tuple[str, str, str] = ("", "", "")  # the values as typed, for X, Y, Z
    options: PlotOptions = field(default_factory=PlotOptions)

    @property
    def order(self) -> list[tuple[int, int, int]]:
        model_axis = next((i for i, (axis, _) in enumerate(self.axes) if axis == "Checkpoint name"), None)
        return sorted(self.cells, key=lambda key: (key[model_axis] if model_axis is not None else 0, key[::-1]))

    def labels(self, which: int) -> list[str]:
        axis, values = self.axes[which]
        return ["" if axis == "Nothing" else AXES[axis].show(v) for v in values]


def plan(request: GenerationRequest, axes: list[tuple[str, str]], options: PlotOptions = PlotOptions()) -> Plot:
    """The plot's cells for up to three (axis, values text) pairs: X, Y, Z."""
    axes = (list(axes) + [("Nothing", "")] * 3)[:3]
    if request.combinatorial:
        raise RequestError("The X/Y/Z plot's cells are one picture each: turn Dynamic Prompts' combinatorial "
                           "generation off (each cell then draws its prompts by its seed).", "dp_combinatorial")
    parsed = [(axis, parse_values(axis, text)) for axis, text in axes]
    if not options.keep_random:  # -1 drawn once, shared by its row or column
        parsed = [(axis, [replace(request, seed=v).with_seed().seed for v in values] if axis == "Seed" else values)
                  for axis, values in parsed]
        request = request.with_seed()
    used = [axis for axis, _ in parsed if axis != "Nothing"]
    if len(used) != len(set(used)):
        raise RequestError("Each axis type may be used once.", "xyz")
    sizes = [len(values) for _, values in parsed]
    if math.prod(sizes) > 256:
        raise RequestError("An X/Y/Z plot may have up to 256 cells.", "xyz")
    request = replace(request, batch_size=1, batch_count=1)
    strides = (1, sizes[0], sizes[0] * sizes[1])  # A1111's: a cell's seed moves on by its index along each axis
    cells = {}
    for key in product(*(range(size) for size in sizes)):
        cell = request
        for (axis, values), i in zip(parsed, key):
            cell = apply(cell, axis, values[i], values)
        offset = sum(i * stride for i, stride, vary in zip(key, strides, options.vary_seeds) if vary)
        if offset and cell.seed >= 0:
            cell = replace(cell, seed=(cell.seed + offset) % (MAX_SEED + 1))
        cells[key] = cell
    return Plot(parsed, cells, tuple(text for _, text in axes), options)


@dataclass
class PlotResult:
    plot: Plot
    results: dict[tuple[int, int, int], GenerationResult]  # each cell's that ran
    interrupted: bool = False

    @property
    def images(self) -> dict[tuple[int, int, int], Image.Image]:
        return {key: result.images[0] for key, result in self.results.items()}

    @property
    def infotexts(self) -> dict[tuple[int, int, int], str]:
        return {key: result.infotexts[0] for key, result in self.results.items()}

    def _ran(self) -> list[tuple[int, int, int]]:
        """The cells that ran in A1111's order: X fastest, then Y, then Z."""
        return sorted(self.results, key=lambda key: key[::-1])

    def cells(self) -> list[GenerationResult]:
        return [self.results[key] for key in self._ran()]

    def grids(self) -> list[Grid]:
        """The grids in A1111's order: the grid of every Z value's grid side by side (each titled with its value),
        then with ``sub_grids`` each Z value's own when there are several; each with its parameters."""
        options, images = self.plot.options, self.images
        (_, xs), (_, ys), (_, zs) = self.plot.axes
        x_labels, y_labels, z_labels = (self.plot.labels(i) if options.legend else [] for i in range(3))
        subs = [labelled_grid([[images.get((x, y, z)) for x in range(len(xs))] for y in range(len(ys))],
                              x_labels, y_labels if any(y_labels) else None, z_labels[z] if z_labels else "",
                              options.margin)
                for z in range(len(zs))]
        main, z_texts = self._infotexts()
        if len(subs) == 1:
            return [Grid(subs[0], main, basename=BASENAME)]
        everything = labelled_grid([subs], [], margin=options.margin)
        z_grids = [Grid(sub, text, basename=BASENAME) for sub, text in zip(subs, z_texts)] if options.sub_grids else []
        return [Grid(everything, main, basename=BASENAME), *z_grids]

    def _infotexts(self) -> tuple[str, list[str]]:
        """The grids' parameters as A1111 saves them: the first cell's, then ``Script: X/Y/Z plot`` and each axis's
        type and values as typed (``X Type``, ``X Values``; for seeds drawn once also ``Fixed X Values``, the seeds
        run); each Z value's grid its first cell's, with the X and Y axes (empty when none of its cells ran)."""
        extra = {"Script": "X/Y/Z plot"}
        for letter, (axis, values), text in zip("XYZ", self.plot.axes, self.plot.texts):
            if axis != "Nothing":
                extra |= {f"{letter} Type": axis, f"{letter} Values": text}
                if axis in ("Seed", "Var. seed") and not self.plot.options.keep_random:
                    extra[f"Fixed {letter} Values"] = ", ".join(str(value) for value in values)
        sub_extra = {key: value for key, value in extra.items() if not key.startswith(("Z ", "Fixed Z "))}
        ordered = [(key[2], self.results[key].infotexts[0]) for key in self._ran()]
        firsts: dict[int, str] = {}
        for z, text in ordered:
            firsts.setdefault(z, text)
        z_texts = [with_params(firsts[z], sub_extra) if z in firsts else "" for z in range(len(self.plot.axes[2][1]))]
        return (with_params(ordered[0][1], extra) if ordered else ""), z_texts


@dataclass
class PlotProgress:
    cell: int  # from 0, in run order
    cells: int
    step: Progress

    @property
    def fraction(self) -> float:
        return (self.cell + self.step.fraction) / self.cells

    def describe(self) -> str:
        return f"Cell {self.cell + 1}/{self.cells}: step {self.step.step}/{self.step.steps}"


def run_plot(stream: Callable[..., Iterator], plot: Plot, *, owner: Any = None,
             save: bool = True) -> Iterator[PlotProgress | PlotResult]:
    """Run every cell through ``stream`` (``Services.stream``) in ``plot.order``; progress, then the result."""
    result = PlotResult(plot, {})
    order = plot.order
    for number, key in enumerate(order):
        for event in stream(plot.cells[key], owner=owner, save=save):
            if isinstance(event, GenerationResult):
                if event.images:
                    result.results[key] = event
                result.interrupted = event.interrupted
            else:
                yield PlotProgress(number, len(order), event)
        if result.interrupted:
            break
    yield result

