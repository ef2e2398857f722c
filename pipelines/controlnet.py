"""ControlNet units as the sd-webui-controlnet extension defines them, and what the engine does with them.

A unit names a preprocessor (``module``), a ControlNet model, a control picture (or, in img2img and inpaint, the
init picture) and how strongly and when the control applies. ``control_map`` turns a unit into the map the
pipeline receives; ``unit_hooks`` patches each ControlNet's outputs for the extension's control modes for
the length of one pass: "My prompt is more important" scales the residuals down towards the shallow layers
(0.825 ** depth), "ControlNet is more important" does so too and gives the control to the conditional half of
the classifier-free-guidance batch only. A unit's effective region mask (``region_mask``) weighs its residuals
there too. A unit whose model is an IP-Adapter (``ip_adapter``) gives the pipeline its picture's encodings instead of
a map.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Iterator, Mapping

import torch
from PIL import Image, ImageOps

from . import ip_adapter
from .errors import RequestError
from .preprocessors import ALIASES, NONE, PREPROCESSORS, Preprocessors, pixel_perfect_resolution
from .region_mask import RegionMask

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
SOFT_DECAY = 0.825  # the extension's per-layer factor for the two unbalanced modes


def _choice(value: Any, names: tuple[str, ...], label: str, where: str) -> int:
    """An index from an index or a name (the extension's API accepts both)."""
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        lowered = [n.lower() for n in names]
        if value.strip().lower() not in lowered:
            raise RequestError(f"{where}: {label} must be one of {', '.join(names)}; got {value!r}.", "controlnets")
        return lowered.index(value.strip().lower())
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise RequestError(f"{where}: {label} must be one of {', '.join(names)}; got {value!r}.", "controlnets") from None
    if not 0 <= index < len(names):
        raise RequestError(f"{where}: {label} must be 0 to {len(names) - 1}; got {index}.", "controlnets")
    return index


def _number(value: Any, label: str, where: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{where}: {label} must be a number, got {value!r}.", "controlnets") from None
    if not low <= number <= high:
        raise RequestError(f"{where}: {label} must be between {low:g} and {high:g}, got {number:g}.", "controlnets")
    return number


NO_MODEL = "None"  # the extension's name for "no model picked"


def model_name(text: str) -> str:
    """"control_x [abcd1234]" (the extension's model list) -> "control_x"; "None" -> ""."""
    text = (text or "").strip()
    if text.lower() == NO_MODEL.lower():
        return ""
    return text.rsplit(" [", 1)[0] if text.endswith("]") else text


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet unit; field names and defaults are the extension's API's."""

    model: str = ""
    module: str = NONE
    image: Any = None  # PIL image; None in img2img/inpaint: the init picture
    enabled: bool = True
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    resize_mode: int = 1  # index into RESIZE_MODES
    processor_res: int = 512
    threshold_a: float | None = None  # None: the module's default
    threshold_b: float | None = None
    pixel_perfect: bool = False
    control_mode: int = 0  # index into CONTROL_MODES
    effective_region_mask: Any = None  # PIL image: where the unit acts (white); None: everywhere
    index: int = 0  # the unit's number, for messages and the infotext

    def __post_init__(self):
        set_, where = object.__setattr__, f"ControlNet unit {self.index}"
        set_(self, "enabled", bool(self.enabled))
        set_(self, "model", model_name(self.model))
        module = (self.module or NONE).strip()
        set_(self, "module", ALIASES.get(module, module))
        if self.module not in PREPROCESSORS:
            raise RequestError(f"{where}: unknown preprocessor {self.module!r}. Choose one of: "
                               f"{', '.join(PREPROCESSORS)}.", "controlnets")
        if self.enabled and not self.model:
            raise RequestError(f"{where}: pick a ControlNet model.", "controlnets")
        for name, label in (("image", "control image"), ("effective_region_mask", "effective region mask")):
            value = getattr(self, name)
            if value is not None and not (hasattr(value, "size") and hasattr(value, "convert")):
                raise RequestError(f"{where}: the {label} must be an image.", "controlnets")
        set_(self, "weight", _number(self.weight, "Control weight", where, 0.0, 2.0))
        set_(self, "guidance_start", _number(self.guidance_start, "Starting control step", where, 0.0, 1.0))
        set_(self, "guidance_end", _number(self.guidance_end, "Ending control step", where, 0.0, 1.0))
        if self.guidance_start > self.guidance_end:
            raise RequestError(f"{where}: the starting control step ({self.guidance_start:g}) is after the ending "
                               f"one ({self.guidance_end:g}).", "controlnets")
        set_(self, "resize_mode", _choice(self.resize_mode, RESIZE_MODES, "Resize mode", where))
        set_(self, "control_mode", _choice(self.control_mode, CONTROL_MODES, "Control mode", where))
        resolution = int(_number(self.processor_res, "Preprocessor resolution", where, -1, 4096))
        set_(self, "processor_res", 512 if resolution <= 0 else max(64, resolution))
        for name in ("threshold_a", "threshold_b"):
            value = getattr(self, name)
            set_(self, name, None if value is None or float(value) == -1 else
                 _number(value, name.replace("_", " ").capitalize(), where, -1e6, 1e6))
        set_(self, "pixel_perfect", bool(self.pixel_perfect))

    @classmethod
    def from_values(cls, values: "ControlUnit | Mapping[str, Any]", index: int) -> "ControlUnit":
        """A unit from the extension's API dict (``input_image`` is its older name for ``image``)."""
        if isinstance(values, ControlUnit):
            return values if values.index == index else cls(**{**values.__dict__, "index": index})
        if not isinstance(values, Mapping):
            raise RequestError(f"ControlNet unit {index} must be a set of named settings.", "controlnets")
        names = {f.name for f in fields(cls)}
        given = {k: v for k, v in values.items() if k in names}
        if given.get("image") is None and values.get("input_image") is not None:
            given["image"] = values["input_image"]
        return cls(**{**given, "index": index})

    def region(self) -> RegionMask | None:
        """The unit's effective region mask as weights; None where it acts everywhere."""
        return None if self.effective_region_mask is None else RegionMask(self.effective_region_mask)

    def thresholds(self) -> tuple[float | None, float | None]:
        module = PREPROCESSORS[self.module]
        a = self.threshold_a if self.threshold_a is not None else (module.threshold_a.value if module.threshold_a else None)
        b = self.threshold_b if self.threshold_b is not None else (module.threshold_b.value if module.threshold_b else None)
        return a, b

    def infotext_value(self, model_hash: str | None) -> str:
        """The extension's infotext entry, for ``ControlNet N: "..."``."""
        a, b = self.thresholds()
        model = f"{self.model} [{model_hash}]" if model_hash else self.model
        parts = {
            "Module": self.module, "Model": model, "Weight": self.weight,
            "Resize Mode": RESIZE_MODES[self.resize_mode], "Processor Res": self.processor_res,
            "Threshold A": a if a is not None else -1, "Threshold B": b if b is not None else -1,
            "Guidance Start": self.guidance_start, "Guidance End": self.guidance_end,
            "Pixel Perfect": self.pixel_perfect, "Control Mode": CONTROL_MODES[self.control_mode],
        }
        return ", ".join(f"{k}: {v}" for k, v in parts.items())


def fit_map(image: Image.Image, size: tuple[int, int], resize_mode: int) -> Image.Image:
    """A control map at the output size; "Resize and Fill" pads with black, which adds no false edges."""
    if resize_mode == 0:
        return image.resize(size, Image.LANCZOS)
    if resize_mode == 1:
        return ImageOps.fit(image, size, Image.LANCZOS)
    return ImageOps.pad(image, size, Image.LANCZOS, color=(0, 0, 0))


def control_source(unit: ControlUnit, init_image: Image.Image | None) -> Image.Image:
    """The picture a unit reads: its own, or in img2img and inpaint the init picture."""
    source = unit.image if unit.image is not None else init_image
    if source is None:
        raise RequestError(f"ControlNet unit {unit.index}: upload a control image (in img2img and inpaint the "
                           "init picture is used when there is none).", "controlnets")
    return source


def control_map(unit: ControlUnit, init_image: Image.Image | None, size: tuple[int, int],
                preprocessors: Preprocessors) -> Image.Image:
    """The map one unit gives its ControlNet at ``size`` (width, height)."""
    source = control_source(unit, init_image)
    resolution = pixel_perfect_resolution(source, *size, unit.resize_mode) if unit.pixel_perfect else unit.processor_res
    detected = preprocessors.run(unit.module, source, resolution, *unit.thresholds())
    return fit_map(detected, size, unit.resize_mode)


def check_module(unit: ControlUnit, adapter: bool) -> None:
    """An IP-Adapter model takes an ``ip-adapter_clip_*`` preprocessor (its CLIP image encoder), and only it does."""
    encoder = PREPROCESSORS[unit.module].encoder
    if adapter and not encoder:
        raise RequestError(f"ControlNet unit {unit.index}: {unit.model!r} is an IP-Adapter; pick an ip-adapter_clip "
                           "preprocessor for it (ip-adapter_clip_h, or ip-adapter_clip_g for SDXL's own adapters).",
                           "controlnets")
    if encoder and not adapter:
        raise RequestError(f"ControlNet unit {unit.index}: the {unit.module} preprocessor is for IP-Adapter models, "
                           f"and {unit.model!r} is a ControlNet.", "controlnets")


def check_family(controlnet, unet, controlnet_name: str, model_name: str) -> None:
    """Refuse a ControlNet made for another family: its residuals would not fit this UNet's blocks."""
    mine, theirs = controlnet.config, unet.config

    def family(config) -> str:
        kind = "SDXL" if config.get("addition_embed_type") == "text_time" else "SD"
        return f"{kind} (cross-attention {config.get('cross_attention_dim')}, blocks {list(config.get('block_out_channels'))})"

    if family(mine) != family(theirs):
        raise RequestError(f"ControlNet {controlnet_name!r} is for {family(mine)} models and cannot control "
                           f"{model_name!r}, which is {family(theirs)}. Pick a ControlNet of its family.",
                           "controlnets")


@dataclass(frozen=True)
class Controls:
    """The enabled units of a job: the ControlNet ones with their loaded ControlNets and their maps at the pass's
    size, and the IP-Adapter ones (``ip_adapter.ImagePrompt``)."""

    units: tuple[ControlUnit, ...]
    models: tuple
    maps: tuple[Image.Image, ...]
    images: tuple[ip_adapter.ImagePrompt, ...] = ()

    def at_size(self, size: tuple[int, int]) -> "Controls":
        """The same controls for a pass of another size (hires fix's second pass)."""
        return replace(self, maps=tuple(fit_map(m, size, 0) for m in self.maps))

    def pipeline_arguments(self, init_image: bool, guided: bool) -> dict:
        """The keyword arguments diffusers' ControlNet pipelines take (lists when there are several); pipelines
        with an init image (img2img, inpaint, hires fix's second pass) take the maps as ``control_image``. The
        IP-Adapter units' encodings are the ``ip_adapter_image_embeds`` (with CFG, ``guided``, their unprompted
        rows too)."""
        arguments = {"ip_adapter_image_embeds": [p.embeds(guided) for p in self.images]} if self.images else {}
        if not self.units:
            return arguments
        single = len(self.units) == 1

        def per_unit(values: list):
            return values[0] if single else values

        return {
            **arguments,
            "control_image" if init_image else "image": per_unit(list(self.maps)),
            "controlnet_conditioning_scale": per_unit([u.weight for u in self.units]),
            "control_guidance_start": per_unit([u.guidance_start for u in self.units]),
            "control_guidance_end": per_unit([u.guidance_end for u in self.units]),
        }

    @contextmanager
    def applied(self, unet, guided: bool, progress: Callable[[], tuple[int, int]]) -> Iterator[None]:
        """For one pass: the control modes' and region masks' hooks on the ControlNets, the IP-Adapters on ``unet``
        (``progress`` gives the step and the steps, for their control steps)."""
        with unit_hooks(list(self.models), list(self.units), guided), \
                ip_adapter.applied(unet, self.images, progress):
            yield


@contextmanager
def unit_hooks(models: list, units: list[ControlUnit], guided: bool) -> Iterator[None]:
    """Forward hooks that apply each unit's control mode and effective region mask to its ControlNet's residuals,
    removed afterwards.

    A model used by several units sees them in the order the pipeline calls it each step."""
    by_model: dict[int, list[tuple[int, RegionMask | None]]] = {}
    for model, unit in zip(models, units):
        by_model.setdefault(id(model), []).append((unit.control_mode, unit.region()))
    handles = []
    try:
        for model in {id(m): m for m in models}.values():
            changes = by_model[id(model)]
            if not any(mode or mask for mode, mask in changes):
                continue
            handles.append(model.register_forward_hook(_unit_hook(itertools.cycle(changes), guided)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _unit_hook(changes: Iterator[tuple[int, RegionMask | None]], guided: bool):
    def hook(module, args, output):
        mode, mask = next(changes)
        if mode == 0 and mask is None:
            return output
        residuals = [*output[0], output[1]]
        if mode:
            depth = len(residuals)
            residuals = [r * SOFT_DECAY ** (depth - 1 - i) for i, r in enumerate(residuals)]
        if mode == 2 and guided:  # the unconditional half (first, in diffusers' batches) gets no control
            half = residuals[0].shape[0] // 2
            residuals = [torch.cat([torch.zeros_like(r[:half]), r[half:]]) for r in residuals]
        if mask is not None:
            residuals = [r * mask.at(r.shape[-2:], r) for r in residuals]
        return (residuals[:-1], residuals[-1], *output[2:])

    return hook
