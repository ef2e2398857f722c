"""A1111's Checkpoint Merger: a new model from the weights of two or three, written as a diffusers folder.

*Weighted sum* is ``A x (1 - M) + B x M``, *Add difference* ``A + (B - C) x M`` (B's fine-tune over C, moved onto A),
*No interpolation* A as it is (a single-file checkpoint saved as a folder, with the VAE the registry gives it). Every
module of the pipeline is merged (UNet, text encoders, VAE), as A1111 merges the whole checkpoint; models whose
modules differ in any weight's name or shape are refused by the first that differs. The models are read afresh from
their files (never the resident copies, which may hold LoRA adapters), the sums are made in float32, and the folder
is written under a temporary name and renamed, so a listing never sees half a model and no model is overwritten.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import RequestError
from .registry import CHECKPOINT_DIR, FOLDER_NAME

METHODS = ("Weighted sum", "Add difference", "No interpolation")


@dataclass(frozen=True)
class MergeRequest:
    primary: str
    secondary: str = ""
    tertiary: str = ""
    method: str = METHODS[0]
    multiplier: float = 0.3
    name: str = ""  # the new model's name; empty: made from the others'

    def __post_init__(self):
        if self.method not in METHODS:
            raise RequestError(f"Unknown interpolation method {self.method!r}. Choose one of: {', '.join(METHODS)}.",
                               "method")
        multiplier = float(self.multiplier)
        if not (math.isfinite(multiplier) and 0.0 <= multiplier <= 1.0):
            raise RequestError(f"The multiplier must be between 0 and 1, got {self.multiplier!r}.", "multiplier")
        for field, label in self.needed:
            if not getattr(self, field):
                raise RequestError(f"{self.method} needs {label}.", field)
        if not FOLDER_NAME.match(self.output_name):
            raise RequestError(f"{self.output_name!r} cannot be a model name: use letters, digits, spaces and "
                               "'.', '+', '-', '_'.", "name")

    @property
    def needed(self) -> list[tuple[str, str]]:
        models = [("primary", "a primary model (A)"), ("secondary", "a secondary model (B)"),
                  ("tertiary", "a tertiary model (C)")]
        return models[:1 + (self.method != METHODS[2]) + (self.method == METHODS[1])]

    @property
    def output_name(self) -> str:
        if self.name.strip():
            return self.name.strip()
        m = float(self.multiplier)
        return {METHODS[0]: f"{self.primary}_{1 - m:g}-{self.secondary}_{m:g}",
                METHODS[1]: f"{self.primary}+{m:g}-{self.secondary}-minus-{self.tertiary}",
                METHODS[2]: f"{self.primary}-copy"}[self.method]


def _modules(pipe) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}


def _merged(a: dict, others: list[dict], method: str, m: float, component: str) -> dict:
    """One module's merged weights; its names and shapes must be the same in every model."""
    for other in others:
        differing = next((key for key in a if key not in other or other[key].shape != a[key].shape),
                         next((key for key in other if key not in a), None))
        if differing is not None:
            raise RequestError(f"The models differ in their {component} ({differing!r}): only models of one "
                               "architecture can be merged.", "secondary")
    merged = {}
    for key, value in a.items():
        if not value.is_floating_point() or method == METHODS[2]:
            merged[key] = value
            continue
        first, second = value.float(), others[0][key].float()
        total = first * (1 - m) + second * m if method == METHODS[0] else first + (second - others[1][key].float()) * m
        merged[key] = total.to(value.dtype)
    return merged


def merge(registry, request: MergeRequest) -> str:
    """Write the merged model into the models folder; its name."""
    folder = registry.models_dir / CHECKPOINT_DIR
    final = folder / request.output_name
    if final.exists() or request.output_name in registry.names():
        raise RequestError(f"A model named {request.output_name!r} exists already; pick another name.", "name")
    infos = []
    for field, _ in request.needed:
        try:
            infos.append(registry.resolve(getattr(request, field)))
        except RequestError as exc:
            raise RequestError(str(exc), field) from None
    pipes = [registry.read(info)[0] for info in infos]
    if not hasattr(pipes[0], "components") or "unet" not in pipes[0].components:
        raise RequestError(f"{infos[0].name} cannot be merged: the merger takes SD and SDXL models.", "primary")
    target = _modules(pipes[0])
    if request.method != METHODS[2]:
        for other, info in zip(pipes[1:], infos[1:]):
            if set(_modules(other)) != set(target):
                raise RequestError(f"{info.name} is not of {infos[0].name}'s kind: only models of one architecture "
                                   "can be merged.", "secondary")
    with torch.no_grad():
        for component, module in target.items():
            merged = _merged(module.state_dict(), [_modules(p)[component].state_dict() for p in pipes[1:]],
                             request.method, float(request.multiplier), component)
            module.load_state_dict(merged)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=".merge-", dir=folder))
    try:
        pipes[0].save_pretrained(temporary, safe_serialization=True)
        os.rename(temporary, final)  # fails rather than replacing a folder made meanwhile
    except OSError as exc:
        raise RequestError(f"Could not write {final}: {exc}", "name") from exc
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return request.output_name
